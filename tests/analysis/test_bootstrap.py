"""The bootstrap over cells: calibrated intervals, order invariance, the batched solver."""

from __future__ import annotations

import numpy as np
import pytest

from annealscale.analysis.bootstrap import bootstrap_law
from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.fit import fit_law
from annealscale.analysis.laws import power_law_d

TRUE = {"E": 0.8, "B": 1.0, "beta": 0.5}
BUDGETS = np.geomspace(1e6, 1e8, 6)  # the last one is held out


def _cells(seeds: int = 3) -> np.ndarray:
    return np.repeat(BUDGETS[:-1], seeds)


def test_prediction_intervals_at_a_held_out_budget_are_calibrated():
    """200 simulated data sets: 5 budgets x 3 seeds, 1 % noise, held-out budget 2.5x beyond.

    Measured when written: 91.5 % of the 90 % intervals cover the true curve.
    """
    rng = np.random.default_rng(123)
    d = _cells()
    truth = power_law_d(BUDGETS[-1], **TRUE)
    y = power_law_d(d, **TRUE)[None, :] * np.exp(0.01 * rng.standard_normal((200, d.size)))
    boot = bootstrap_law(d, y, n_boot=200, seed=1)  # every data set and resample at once
    assert boot.params.shape == (200, 200, 3)
    lo, hi = boot.interval([BUDGETS[-1]], level=0.9)  # (200, 1) each
    coverage = np.mean((lo[:, 0] <= truth) & (truth <= hi[:, 0]))
    assert 0.80 <= coverage <= 0.97
    assert boot.converged.mean() > 0.98


def test_stacked_data_sets_match_one_at_a_time():
    rng = np.random.default_rng(4)
    d = _cells()
    y = power_law_d(d, **TRUE)[None, :] * np.exp(0.01 * rng.standard_normal((3, d.size)))
    stacked = bootstrap_law(d, y, n_boot=50, seed=9)
    alone = bootstrap_law(d, y[0], n_boot=50, seed=9)
    np.testing.assert_allclose(stacked.params[0], alone.params, rtol=1e-6)


def test_result_does_not_depend_on_row_order():
    rng = np.random.default_rng(0)
    d = _cells()
    y = power_law_d(d, **TRUE) * np.exp(0.01 * rng.standard_normal(d.size))
    perm = rng.permutation(d.size)
    a = bootstrap_law(d, y, n_boot=100, seed=5)
    b = bootstrap_law(d[perm], y[perm], n_boot=100, seed=5)
    np.testing.assert_array_equal(a.params, b.params)


def test_full_data_fit_of_the_batched_solver_matches_fit_law():
    rng = np.random.default_rng(2)
    d = _cells()
    y = power_law_d(d, **TRUE) * np.exp(0.01 * rng.standard_normal(d.size))
    boot = bootstrap_law(d, y, n_boot=10)  # no start: the batched solver fits all cells too
    np.testing.assert_allclose(boot.point, fit_law(d, y).theta, rtol=1e-4)


def test_resamples_see_enough_distinct_budgets_and_groups_move_together():
    d = np.repeat([1e6, 1e7, 1e8], 2)  # three budgets only: every resample must keep all three
    y = power_law_d(d, **TRUE)
    boot = bootstrap_law(d, y, n_boot=200, seed=1)
    np.testing.assert_allclose(boot.draws(d), np.broadcast_to(y, (200, 6)), rtol=1e-5)
    grouped = bootstrap_law(d, y, n_boot=50, groups=["a", "a", "b", "b", "c", "c"])
    assert grouped.params.shape == (50, 3)


def test_intervals_nest_and_contain_the_fit():
    rng = np.random.default_rng(8)
    d = _cells()
    y = power_law_d(d, **TRUE) * np.exp(0.01 * rng.standard_normal(d.size))
    res = fit_law(d, y)
    boot = bootstrap_law(d, y, n_boot=400, start=res.theta)
    x = np.geomspace(1e6, 1e9, 7)
    lo80, hi80 = boot.interval(x, 0.8)
    lo95, hi95 = boot.interval(x, 0.95)
    assert np.all(lo95 <= lo80) and np.all(hi80 <= hi95)
    point = res.predict(x)
    assert np.all((lo95 <= point) & (point <= hi95))
    obs = boot.observation_draws(x, n_seeds=1)
    assert obs.std(axis=0).min() > boot.draws(x).std(axis=0).min()  # noise widens it
    summary = boot.to_dict()
    assert summary["n_resamples"] == 400 and set(summary["param_intervals"]) == set(TRUE)


def test_invalid_inputs_raise():
    with pytest.raises(AnalysisError, match="n_boot"):
        bootstrap_law(BUDGETS, power_law_d(BUDGETS, **TRUE), n_boot=0)
    with pytest.raises(AnalysisError, match="distinct"):
        bootstrap_law([1e6, 1e6], [1.0, 1.1])
    boot = bootstrap_law(BUDGETS, power_law_d(BUDGETS, **TRUE), n_boot=5)
    with pytest.raises(AnalysisError, match="level"):
        boot.interval(BUDGETS, level=1.5)


def test_underdetermined_fit_spreads_along_the_ridge_of_exact_fits():
    d = np.repeat([1e6, 1e7], 2)  # two budgets, three parameters: many curves fit exactly
    y = power_law_d(d, **TRUE)
    boot = bootstrap_law(d, y, n_boot=200, seed=0)
    at_data = boot.interval([1e6, 1e7])
    np.testing.assert_allclose(at_data[0], at_data[1], rtol=1e-4)  # every curve hits the data
    lo, hi = boot.interval([1e9])
    assert hi[0] / lo[0] > 1.05  # but they part beyond it: the interval says so
