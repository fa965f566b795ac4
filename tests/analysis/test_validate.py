"""Rolling-origin validation and law selection: on sources whose pools are repeated, and\nalong model size."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from annealscale.analysis.laws import LAWS, chinchilla_law, effective_data_law
from annealscale.analysis.table import load_results
from annealscale.analysis.validate import candidate_laws, validate_laws

# Small pools (1e4 tokens per USD at $10-$160): the largest anneals repeat a pool up to
# 500 times, so spend matters and a law in D alone cannot describe the cells.
CURATION = {
    "web": {"law": "effective_data", "params": {"E": 0.8, "B": 1.0, "beta": 0.4, "R_star": 5.0}},
    "synth": {
        "law": "effective_data",
        "params": {"E": 0.9, "B": 0.6, "beta": 0.3, "R_star": 2.0},
        "tokens_per_usd": 2e4,
    },
}
SPENDS = (10.0, 40.0, 160.0)


@pytest.fixture(scope="module")
def curation_table(simulate_table):
    sources = {
        s: {**v, "tokens_per_usd": v.get("tokens_per_usd", 1e4)} for s, v in CURATION.items()
    }
    return load_results(simulate_table(sources, spends=SPENDS, noise=0.004, rng_seed=3))


@pytest.fixture(scope="module")
def validation(curation_table):
    laws, _ = candidate_laws(curation_table, ["power_law_D", "effective_data"])
    return validate_laws(curation_table, laws, level=0.9)


def test_folds_roll_along_tokens_and_spend(validation):
    for v in validation.laws:
        assert {c.source for c in v.cells} == set(CURATION)
        assert {c.variable for c in v.cells} == {"train_tokens", "curation_spend"}
        for c in v.cells:
            value = c.train_tokens if c.variable == "train_tokens" else c.curation_spend
            assert value > c.origin and c.reach == pytest.approx(value / c.origin)
            assert c.n_seeds == 2
        # a fold along tokens fits at least three counts: origins from the third up
        assert min(c.origin for c in v.cells if c.variable == "train_tokens") == 1e7
        assert {c.origin for c in v.cells if c.variable == "curation_spend"} == {40.0}
    keys = [{c.key() for c in v.cells} for v in validation.laws]
    assert keys[0] == keys[1]  # like for like


def test_curation_aware_law_wins_on_extrapolation_error(validation):
    by_name = {v.law.name: v for v in validation.laws}
    assert validation.selected.name == "effective_data"
    assert validation.checked
    assert by_name["effective_data"].mean_abs_error < 0.01
    assert by_name["power_law_D"].mean_abs_error > 3 * by_name["effective_data"].mean_abs_error
    assert "effective_data" in validation.reason and "rolling-origin" in validation.reason
    assert validation.weights["effective_data"] > 0.9  # inverse-error weights
    chosen = by_name["effective_data"]
    assert chosen.coverage >= 0.8
    for c in chosen.cells:
        truth = effective_data_law(
            0.5 * c.train_tokens,
            CURATION[c.source].get("tokens_per_usd", 1e4) * c.curation_spend,
            **CURATION[c.source]["params"],
        )
        assert abs(c.predicted / truth - 1) < 0.03
        assert c.lower <= c.predicted <= c.upper
        assert c.obs_lower <= c.lower and c.upper <= c.obs_upper  # noise widens it
    # every candidate has its full-data fit, for the law-disagreement term
    assert all(set(v.fits) == set(CURATION) for v in validation.laws)


def test_a_wrong_law_extrapolates_worse_and_its_rate_says_so(curation_table):
    wrong = validate_laws(curation_table, [LAWS["power_law_D"]])
    right = validate_laws(curation_table, [LAWS["effective_data"]])
    assert wrong.error_rate > 3 * right.error_rate


def test_simpler_law_is_kept_when_the_richer_one_does_not_help(simulate_table):
    table = load_results(
        simulate_table({"a": {"params": {"E": 0.8, "B": 1.0, "beta": 0.5}}}, rng_seed=2)
    )
    laws, _ = candidate_laws(table, ["power_law_D", "effective_data"])
    v = validate_laws(table, laws)
    assert v.selected.name == "power_law_D"


def test_selection_rolls_along_model_size(rng_seed=4):
    """Cells at three model sizes: the law with a model-size term predicts the largest
    model from the smaller ones; the law without one cannot."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for n in (1e7, 3e7, 1e8):
        for d in (1e6, 3e6, 1e7, 3e7, 1e8):
            truth = chinchilla_law(n, d, E=0.7, A=0.9, B=0.8, alpha=0.35, beta=0.3)
            for seed in range(2):
                rows.append(
                    {
                        "source": "s",
                        "curation_spend": 1.0,
                        "train_tokens": d,
                        "model_params": n,
                        "seed": seed,
                        "domain_bpb": float(truth) * float(np.exp(0.003 * rng.standard_normal())),
                    }
                )
    table = load_results(pd.DataFrame(rows))
    laws, _ = candidate_laws(table, ["power_law_D", "two_variable"])
    v = validate_laws(table, laws)
    assert {c.variable for c in v.of(LAWS["two_variable"]).cells} == {
        "train_tokens",
        "model_params",
    }
    assert v.selected.name == "two_variable"


def test_nothing_to_hold_out_falls_back_to_the_first_candidate(simulate_table):
    table = load_results(
        simulate_table(
            {"a": {"params": {"E": 0.8, "B": 1.0, "beta": 0.5}}}, train_tokens=(1e6, 1e7)
        )
    )
    v = validate_laws(table, [LAWS["power_law_D"]])
    assert v.selected.name == "power_law_D"
    assert not v.checked
    assert "no law could be checked" in v.reason
    assert "too few values to fit on and hold out" in v.laws[0].skipped["a"]
    assert math.isnan(v.laws[0].mean_abs_error)


def test_candidates_need_their_columns(curation_table):
    minimal = load_results(
        curation_table.finished[["source", "curation_spend", "train_tokens", "domain_bpb"]]
    )
    laws, notes = candidate_laws(minimal, list(LAWS))
    assert [law.name for law in laws] == ["power_law_D"]
    assert any("effective_data' skipped: needs column(s) domain_tokens" in n for n in notes)
    laws, notes = candidate_laws(curation_table, list(LAWS))
    assert [law.name for law in laws] == ["power_law_D", "effective_data", "effective_data_quality"]
    assert any("two_variable' skipped: needs column(s) model_params" in n for n in notes)
