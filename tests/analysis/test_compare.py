from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from annealscale.analysis.compare import (
    Target,
    TargetDecision,
    decide,
    decide_target,
    find_crossovers,
    format_tokens,
    micro_annealing,
    probability_best,
)
from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.sources import fit_sources
from annealscale.analysis.table import cell_means, load_results


def _cells(rows: list[tuple[str, float, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["source", "curation_spend", "train_tokens", "domain_bpb", "total_cost"]
    ).assign(general_bpb=1.0, n_seeds=1)


def _empty_decision() -> TargetDecision:
    return TargetDecision(
        target=Target(train_tokens=1e8),
        predictions={},
        ranking=(),
        p_best={},
        recommended=None,
        micro_annealing=None,
        crossovers=(),
        allocation=None,
        unranked={},
        level=0.9,
    )


def test_cheapest_cell_within_tolerance():
    cells = _cells(
        [
            ("A", 10.0, 1e8, 1.000, 500.0),  # best
            ("A", 10.0, 1e7, 1.009, 80.0),  # within 1 %, cheapest such
            ("B", 5.0, 1e7, 1.011, 20.0),  # cheaper but 1.1 % worse
            ("B", 5.0, 1e8, 1.005, 300.0),
        ]
    )
    targets = [_empty_decision()]
    d = decide(targets, cells, tolerance_pct=1.0)
    assert d.best_cell["total_cost"] == 500.0
    assert d.cheapest_cell_within_tolerance["total_cost"] == 80.0
    strict = decide(targets, cells, tolerance_pct=0.0)
    assert strict.cheapest_cell_within_tolerance == strict.best_cell
    loose = decide(targets, cells, tolerance_pct=2.0)
    assert loose.cheapest_cell_within_tolerance["source"] == "B"
    no_costs = decide(targets, cells.drop(columns=["total_cost"]))
    assert no_costs.cheapest_cell_within_tolerance is None
    with pytest.raises(AnalysisError, match="tolerance_pct"):
        decide(targets, cells, tolerance_pct=-1.0)


def test_probability_best_counts_paired_draws():
    p = probability_best({"a": np.array([1.0, 2.0, 3.0, 4.0]), "b": np.array([2.0, 1.0, 4.0, 3.0])})
    assert p == {"a": 0.5, "b": 0.5}
    p = probability_best({"a": np.array([1.0, 1.0]), "b": np.array([2.0, np.nan])})
    assert p == {"a": 1.0, "b": 0.0}
    assert probability_best({}) == {}


def test_find_crossovers_locates_a_sign_change_and_its_interval():
    grid = np.geomspace(1e6, 1e10, 200)
    lx = np.log(grid)
    # a falls linearly in log D and crosses the flat b at 1e8; resamples shift it by +-20 %
    shifts = np.linspace(-0.2, 0.2, 101)
    a_draws = -(lx[None, :] - np.log(1e8) - shifts[:, None])
    b_draws = np.zeros_like(a_draws)
    found = find_crossovers(
        "train_tokens",
        grid,
        {"a": -(lx - np.log(1e8)), "b": np.zeros_like(lx)},
        {"a": a_draws, "b": b_draws},
        level=0.9,
        span=(1e6, 1e9),
    )
    (c,) = found
    assert (c.before, c.after) == ("b", "a")  # b leads below 1e8, a above
    assert c.at == pytest.approx(1e8, rel=1e-6)
    assert c.lower == pytest.approx(1e8 * np.exp(-0.18), rel=1e-3)
    assert c.upper == pytest.approx(1e8 * np.exp(0.18), rel=1e-3)
    assert c.probability == 1.0 and c.point_estimate and c.before_target
    assert "a overtakes b at 1e8 training tokens" in c.describe()


def test_crossover_seen_only_in_resamples_is_reported_as_possible():
    grid = np.geomspace(1e6, 1e8, 50)
    flat = np.zeros(50)
    draws = np.zeros((10, 50)) + 0.01
    draws[:5, 25:] = -0.01  # half the resamples cross in the middle
    found = find_crossovers(
        "train_tokens",
        grid,
        {"a": flat + 0.01, "b": flat},
        {"a": draws, "b": np.zeros((10, 50))},
        level=0.9,
        span=(1e6, 1e8),
    )
    (c,) = found
    assert not c.point_estimate and c.probability == 0.5
    assert c.describe().startswith("possible crossover:")


def test_micro_annealing_ranks_the_cheapest_cells():
    cells = _cells(
        [
            ("A", 10.0, 1e6, 1.30, 11.0),
            ("A", 10.0, 1e8, 1.10, 110.0),
            ("B", 5.0, 1e6, 1.60, 6.0),
            ("B", 5.0, 1e8, 0.90, 105.0),
        ]
    )
    m = micro_annealing(cells, ["B", "A"], "B", by_cost=False)
    assert m.ranking == ("A", "B") and m.pick == "A"
    assert m.ranking_differs and m.pick_differs and m.wrong_at_target
    assert m.cells["A"]["train_tokens"] == 1e6
    agree = micro_annealing(cells, ["A", "B"], "A", by_cost=True)
    assert not agree.ranking_differs and not agree.pick_differs


def test_decide_target_on_crossing_sources(results):
    table = load_results(results)
    fits = fit_sources(table.finished, n_boot=100)
    cells = cell_means(table.finished)
    td = decide_target(Target(train_tokens=1e9), fits, cells, costs=None, frontier=None, level=0.9)
    assert td.ranking == ("B", "A") and td.recommended == "B"
    assert td.p_best["B"] > 0.95
    assert td.micro_annealing.pick == "A" and td.micro_annealing.ranking_differs
    (c,) = td.crossovers
    assert (c.before, c.after) == ("A", "B") and 1e6 < c.at < 1e7
    for p in td.predictions.values():
        assert p.lower <= p.predicted <= p.upper and p.extrapolated
    assert td.predictions["A"].curation_spend == 400.0  # no spend given: the largest sampled
    with pytest.raises(AnalysisError, match="cost columns"):
        decide_target(Target(total_cost=1e3), fits, cells, costs=None, frontier=None, level=0.9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "needs train_tokens"),
        ({"train_tokens": -1.0}, "must be finite and positive"),
        ({"total_cost": 10.0, "train_tokens": 1e6}, "give it alone"),
    ],
)
def test_invalid_targets_raise(kwargs, match):
    with pytest.raises(AnalysisError, match=match):
        Target(**kwargs)


def test_target_labels():
    assert Target(train_tokens=1e9).label == "1e9 training tokens"
    assert Target(train_tokens=1e9, curation_spend=500.0).label == (
        "1e9 training tokens and $500 curation spend"
    )
    assert Target(total_cost=2500.0).label == "$2,500 total cost"


@pytest.mark.parametrize(("n", "text"), [(1e6, "1e6"), (1.5e8, "1.5e8"), (3.16e10, "3.16e10")])
def test_format_tokens(n, text):
    assert format_tokens(n) == text
