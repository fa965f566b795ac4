"""Costs, the best split of a budget, the frontier and the allocation across sources."""

from __future__ import annotations

import json

import numpy as np
import pytest

from annealscale.analysis import analyze
from annealscale.analysis.budget import allocate, best_split, cost_model, frontier, pareto_cells
from annealscale.analysis.sources import fit_sources
from annealscale.analysis.table import cell_means, load_results

POWER = {
    "a": {"params": {"E": 1.0, "B": 0.3, "beta": 0.2}},
    "b": {"params": {"E": 0.8, "B": 0.8, "beta": 0.45}},
}
# tiny pools (1e3 tokens per USD): buying more pool pays off against more training tokens
REPEATED = {
    "pool": {
        "law": "effective_data",
        "params": {"E": 0.8, "B": 1.0, "beta": 0.4, "R_star": 3.0},
        "tokens_per_usd": 1e3,
    }
}


def test_cost_model_recovers_the_simulated_prices(simulate_table):
    table = load_results(simulate_table(POWER))
    cm, note = cost_model(table)
    assert note is None
    assert cm.usd_per_train_token == pytest.approx(1e-6, rel=1e-9)
    assert cm.train_fixed_usd == pytest.approx(2.0, rel=1e-9)
    assert dict(cm.curation_ratio) == {"a": 1.0, "b": 1.0}
    assert cm.train_tokens_for("a", 102.0 + 1e-6 * 5e7, 100.0) == pytest.approx(5e7)
    assert np.isnan(cm.train_tokens_for("a", 50.0, 100.0))  # the spend alone is over budget
    only_total = load_results(table.finished.drop(columns=["curation_cost", "train_cost"]))
    cm2, _ = cost_model(only_total)
    assert cm2.usd_per_train_token == pytest.approx(1e-6, rel=1e-6)
    assert "no cost split given" in cm2.basis
    none, why = cost_model(load_results(table.finished.drop(columns=["total_cost", "train_cost"])))
    assert none is None and "no cost columns" in why


def test_law_without_spend_term_spends_the_least_on_curation(simulate_table):
    table = load_results(simulate_table(POWER, spends=(100.0, 400.0)))
    fits = fit_sources(table.finished, n_boot=20)
    cm, _ = cost_model(table)
    split = best_split(fits["b"], cm, 1000.0)
    assert split.curation_spend == 100.0
    assert split.train_tokens == pytest.approx((1000.0 - 100.0 - 2.0) / 1e-6)
    assert split.curation_cost + split.train_cost == pytest.approx(1000.0)
    assert best_split(fits["b"], cm, 50.0) is None


def test_curation_aware_split_is_optimal_on_a_dense_grid(simulate_table):
    table = load_results(
        simulate_table(REPEATED, spends=(10.0, 40.0, 160.0, 640.0), noise=0.002, rng_seed=4)
    )
    fits = fit_sources(table.finished, law="effective_data", n_boot=20)
    cm, _ = cost_model(table)
    sf = fits["pool"]
    total = 400.0
    split = best_split(sf, cm, total)
    assert 10.0 < split.curation_spend < 390.0  # an interior optimum: both matter
    spends = np.geomspace(10.0, 399.0, 4000)
    dense = sf.predict(cm.train_tokens_for("pool", total, spends), spends)
    assert split.predicted <= np.nanmin(dense) + 1e-6
    assert split.curation_cost + split.train_cost == pytest.approx(total)


def test_frontier_and_allocation(simulate_table):
    table = load_results(simulate_table(POWER))
    fits = fit_sources(table.finished, n_boot=50)
    cm, _ = cost_model(table)
    cells = cell_means(table.finished)
    front = frontier(fits, cm, cells, level=0.9)
    for curve in front.curves.values():
        ok = np.isfinite(curve["predicted"])
        assert np.all(np.diff(curve["predicted"][ok]) < 0)  # more budget, lower bpb
        assert np.all(curve["lower"][ok] <= curve["predicted"][ok] + 1e-12)
    assert front.best_source[-1] == "b"
    alloc = allocate(fits, cm, 1000.0)
    assert alloc.chosen == "b"
    assert alloc.splits["b"].predicted < alloc.splits["a"].predicted
    assert "one source" in alloc.note
    par = pareto_cells(cells)
    assert np.all(np.diff(par["total_cost"]) >= 0) and np.all(np.diff(par["domain_bpb"]) < 0)


def test_cost_target_in_the_report(simulate_table, tmp_path):
    table = simulate_table(REPEATED, spends=(10.0, 40.0, 160.0, 640.0), noise=0.002, rng_seed=4)
    result = analyze(table, tmp_path, target_cost=400.0, n_boot=100, candidates=("effective_data",))
    data = json.loads(result.fits_json.read_text())
    target = data["targets"][0]
    assert target["target"]["total_cost"] == 400.0
    split = target["allocation"]["split"]
    assert split["source"] == "pool" and 10.0 < split["curation_spend"] < 390.0
    assert target["p_best"] == {"pool": 1.0}
    assert data["frontier"]["best_source"][-1] == "pool"
    assert "frontier" in result.plots
    assert "Best split of $400" in result.report_html.read_text()
