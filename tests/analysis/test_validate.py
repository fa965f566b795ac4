"""Held-out validation and law selection, on sources whose pools are repeated."""

from __future__ import annotations

import math

import pytest

from annealscale.analysis.laws import LAWS, effective_data_law
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
    return validate_laws(curation_table, laws, n_boot=200, level=0.9, seed=0)


def test_held_out_cells_are_the_largest_budget_of_each_source(validation):
    for v in validation.laws:
        assert {c.source for c in v.cells} == set(CURATION)
        assert {c.train_tokens for c in v.cells} == {1e8}
        assert sorted(c.curation_spend for c in v.cells if c.source == "web") == list(SPENDS)
        assert all(c.n_seeds == 2 for c in v.cells)


def test_curation_aware_law_wins_on_held_out_error(validation):
    by_name = {v.law.name: v for v in validation.laws}
    assert validation.selected.name == "effective_data"
    assert by_name["effective_data"].mean_abs_error < 0.01
    assert by_name["power_law_D"].mean_abs_error > 3 * by_name["effective_data"].mean_abs_error
    assert "effective_data" in validation.reason
    chosen = by_name["effective_data"]
    # 6 held-out cells, 90 % intervals. Measured: 4/6 with the raw bootstrap curves, 3/6
    # once they are re-centred on the point fit (so that every interval contains it):
    # the cell at synth $160 then misses its upper bound by 0.04 %.
    assert chosen.coverage >= 3 / 6
    for c in chosen.cells:
        truth = effective_data_law(
            0.5 * 1e8,
            CURATION[c.source].get("tokens_per_usd", 1e4) * c.curation_spend,
            **CURATION[c.source]["params"],
        )
        assert abs(c.predicted / truth - 1) < 0.02
        assert c.lower <= c.predicted <= c.upper
        assert c.obs_lower <= c.lower and c.upper <= c.obs_upper  # noise widens it


def test_simpler_law_is_kept_when_the_richer_one_does_not_help(simulate_table):
    table = load_results(
        simulate_table({"a": {"params": {"E": 0.8, "B": 1.0, "beta": 0.5}}}, rng_seed=2)
    )
    laws, _ = candidate_laws(table, ["power_law_D", "effective_data"])
    v = validate_laws(table, laws, n_boot=100, level=0.9, seed=0)
    assert v.selected.name == "power_law_D"


def test_nothing_to_hold_out_falls_back_to_the_first_candidate(simulate_table):
    table = load_results(
        simulate_table(
            {"a": {"params": {"E": 0.8, "B": 1.0, "beta": 0.5}}}, train_tokens=(1e6, 1e7)
        )
    )
    v = validate_laws(table, [LAWS["power_law_D"]], n_boot=20, level=0.9, seed=0)
    assert v.selected.name == "power_law_D"
    assert "nothing could be held out" in v.reason
    assert v.laws[0].skipped == {"a": "fewer than two training-token values below the largest"}
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
