"""One decision per target: headline, table, split, CLI and fits.json agree; "Buy" only on
evidence; points inside their intervals."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from annealscale.analysis import DecisionRule, evaluate, write_report
from annealscale.analysis.headline import format_probability
from annealscale.analysis.laws import effective_data_law
from annealscale.cluster.cli import main

# Two curation-aware sources: "web" leads at large budgets, "book" at small ones.
CURATION = {
    "web": {"law": "effective_data", "params": {"E": 0.8, "B": 1.0, "beta": 0.4, "R_star": 5.0}},
    "book": {"law": "effective_data", "params": {"E": 0.95, "B": 0.5, "beta": 0.3, "R_star": 3.0}},
}
SPENDS = (10.0, 40.0, 160.0)
TARGETS = {
    "tokens": {"target_tokens": 4e8},
    "spend": {"target_tokens": 4e8, "target_spend": 80.0},
    "cost": {"target_cost": 600.0},
}


@pytest.fixture(scope="module")
def curation_table(simulate_table):
    sources = {s: {**v, "tokens_per_usd": 1e5} for s, v in CURATION.items()}
    return simulate_table(sources, spends=SPENDS, noise=0.003, rng_seed=5)


@pytest.fixture(scope="module", params=sorted(TARGETS))
def decided(request, curation_table, tmp_path_factory):
    kind = request.param
    out = tmp_path_factory.mktemp(f"decision-{kind}")
    analysis = evaluate(curation_table, n_boot=200, next_cells=0, **TARGETS[kind])
    result = write_report(analysis, out)
    return kind, analysis, result


def test_every_output_reads_the_same_decision(decided):
    kind, analysis, result = decided
    td = analysis.decision.primary
    assert td.recommended == td.ranking[0]
    assert td.p_best[td.recommended] == max(td.p_best.values())
    first = analysis.decision.messages[0]
    assert td.recommended in first.split(":")[0] or f" {td.recommended} leads" in first
    data = json.loads(result.fits_json.read_text())
    assert data["decision"]["best_source"] == td.recommended
    assert data["decision"]["outcome"] == td.outcome
    assert data["targets"][0]["ranking"][0] == td.recommended
    assert data["decision"]["messages"][0] == first
    html = result.report_html.read_text()
    table = html.split(f"<h2>Decision at {td.target.label}</h2>", 1)[1]
    first_row = re.search(r'<tr class="best">.*?<td class="text">(.*?)</td>', table).group(1)
    assert first_row == td.recommended
    if kind == "cost":
        assert td.allocation is not None and td.allocation.chosen == td.recommended
        assert f"Best split of $600 for {td.recommended}" in " ".join(analysis.decision.messages)
    if kind == "spend":  # the spend target moves every source to that spend's curve
        assert {p.curation_spend for p in td.predictions.values()} == {80.0}


def test_cli_prints_the_same_decision(decided, curation_table, tmp_path, capsys):
    kind, analysis, _ = decided
    path = tmp_path / "results.parquet"
    curation_table.to_parquet(path)
    flags = {"target_tokens": "--target-tokens", "target_spend": "--target-spend"}
    flags["target_cost"] = "--target-cost"
    args = [x for k, v in TARGETS[kind].items() for x in (flags[k], f"{v:g}")]
    assert main(["analyze", str(path), "--out", str(tmp_path / "out"), *args]) == 0
    printed = capsys.readouterr().out.splitlines()
    # the CLI re-runs the analysis with 1000 resamples: the same leader and outcome
    td = analysis.decision.primary
    assert printed[0].split(":")[0] == analysis.decision.messages[0].split(":")[0]
    assert td.recommended in printed[0]


def test_no_point_estimate_lies_outside_its_interval(decided):
    _, analysis, _ = decided
    for td in analysis.decision.targets:
        for p in td.predictions.values():
            assert p.lower <= p.predicted <= p.upper
        if td.gap is not None:
            lo, hi = td.gap_interval
            assert lo <= td.gap <= hi
        for c in td.crossovers:
            assert c.lower <= c.at <= c.upper or not c.point_estimate
    if analysis.frontier is not None:
        for curve in analysis.frontier.curves.values():
            ok = np.isfinite(curve["lower"])
            assert np.all(curve["lower"][ok] <= curve["predicted"][ok] + 1e-12)
            assert np.all(curve["predicted"][ok] <= curve["upper"][ok] + 1e-12)


def test_intervals_widen_with_reach(curation_table):
    near = evaluate(curation_table, target_tokens=2e8, n_boot=200, next_cells=0)
    far = evaluate(curation_table, target_tokens=2e10, n_boot=200, next_cells=0)
    for s in CURATION:
        p_near = near.decision.primary.predictions[s]
        p_far = far.decision.primary.predictions[s]
        assert p_far.reach["train_tokens"] == pytest.approx(200.0)
        assert np.log(p_far.upper / p_far.lower) > 2 * np.log(p_near.upper / p_near.lower)
    assert "200x beyond the sampled training tokens (every source)" in " ".join(
        far.decision.messages
    )


def _two_sources(simulate_table, gap: float):
    """Two power-law sources whose curves differ by ``gap`` (relative) everywhere."""
    base = {"E": 0.8, "B": 1.0, "beta": 0.4}
    scaled = {k: v * (1 + gap) if k in ("E", "B") else v for k, v in base.items()}
    return simulate_table({"a": {"params": base}, "b": {"params": scaled}}, noise=0.002)


def test_sources_within_the_margin_are_not_bought(simulate_table):
    analysis = evaluate(
        _two_sources(simulate_table, 0.002), target_tokens=3e8, n_boot=200, next_cells=0
    )
    td = analysis.decision.primary
    assert td.outcome == "not_separated"
    assert not analysis.decision.messages[0].startswith("Buy")
    assert analysis.decision.messages[0].startswith("Not separated yet at 3e8 training tokens")
    assert "0.5%" in analysis.decision.messages[0]  # the rule it falls short of


def test_a_clear_winner_is_bought(simulate_table):
    analysis = evaluate(
        _two_sources(simulate_table, 0.05), target_tokens=3e8, n_boot=200, next_cells=0
    )
    td = analysis.decision.primary
    assert td.outcome == "buy" and td.recommended == "a"
    assert analysis.decision.messages[0].startswith("Buy a: at 3e8 training tokens")
    # the same table under a stricter margin is not a decision
    strict = evaluate(
        _two_sources(simulate_table, 0.05),
        target_tokens=3e8,
        n_boot=200,
        next_cells=0,
        rule=DecisionRule(margin_pct=10.0),
    )
    assert strict.decision.primary.outcome == "not_separated"


def test_a_grid_too_small_to_check_its_law_says_so(simulate_table):
    table = simulate_table(
        {
            "a": {"params": {"E": 0.8, "B": 1.0, "beta": 0.4}},
            "b": {"params": {"E": 1.2, "B": 1.0, "beta": 0.4}},
        },
        train_tokens=(1e6, 1e7),
        spends=(100.0, 400.0),
        seeds=1,
    )
    analysis = evaluate(table, target_tokens=1e8, n_boot=200, next_cells=0)
    td = analysis.decision.primary
    assert td.outcome == "unchecked" and td.recommended == "a"
    head = analysis.decision.messages[0]
    assert head.startswith("No decision at 1e8 training tokens: the grid is too small")
    assert "100%" not in " ".join(analysis.decision.messages)
    assert "too few training-token counts (a 2, b 2)" in head


def test_a_reach_no_fold_checked_is_no_decision(simulate_table):
    """Three token counts and three spends: folds check spend, never tokens; a target
    beyond the sampled tokens is then not decided, one inside them is."""
    table = simulate_table(
        {
            "a": {"params": {"E": 0.8, "B": 1.0, "beta": 0.4}},
            "b": {"params": {"E": 1.2, "B": 1.0, "beta": 0.4}},
        },
        train_tokens=(1e6, 1e7, 1e8),
        spends=(10.0, 40.0, 160.0),
    )
    far = evaluate(table, target_tokens=1e10, n_boot=100, next_cells=0)
    assert far.validation.checked_variables == {"curation_spend"}
    assert far.decision.primary.outcome == "unchecked"
    assert "no fold checked how the law extrapolates there" in far.decision.messages[0]
    inside = evaluate(table, target_tokens=1e8, n_boot=100, next_cells=0)
    assert inside.decision.primary.outcome == "buy"


def test_a_spend_target_is_answered_by_a_law_with_a_spend_term(simulate_table):
    """Power-law sources: auto selection alone keeps power_law_D, which ignores spend; a
    spend target restricts the candidates to laws that can answer it."""
    table = _two_sources(simulate_table, 0.05)
    plain = evaluate(table, target_tokens=3e8, n_boot=100, next_cells=0)
    assert plain.law.name == "power_law_D"
    spend = evaluate(table, target_tokens=3e8, target_spend=200.0, n_boot=100, next_cells=0)
    assert {"unique_tokens"} <= set(spend.law.columns)
    assert {p.curation_spend for p in spend.decision.primary.predictions.values()} == {200.0}


@pytest.mark.parametrize(
    ("p", "text"), [(1.0, ">99%"), (0.0, "<1%"), (0.64, "64%"), (0.897, "89%")]
)
def test_probabilities_are_never_shown_as_certain(p, text):
    assert format_probability(p) == text


def test_truth_inside_the_interval_when_the_law_is_right(curation_table):
    analysis = evaluate(curation_table, target_tokens=4e9, n_boot=200, next_cells=0)
    for s, p in analysis.decision.primary.predictions.items():
        pool = 1e5 * SPENDS[-1]
        truth = effective_data_law(0.5 * 4e9, pool, **CURATION[s]["params"])
        assert p.lower <= truth <= p.upper
