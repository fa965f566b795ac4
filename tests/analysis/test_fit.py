from __future__ import annotations

import math

import numpy as np
import pytest

from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.fit import LawFit, fit_law, huber
from annealscale.analysis.laws import LAWS, effective_data_law, power_law_d, user_law

TRUE = {"E": 0.8, "B": 1.0, "beta": 0.5}
D6 = np.geomspace(1e6, 1e8, 6)  # 6 values over 2 decades


def noisy(seed: int, reps: int = 4, noise: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = np.repeat(D6, reps)
    return d, power_law_d(d, **TRUE) * (1 + noise * rng.standard_normal(d.size))


def test_huber_matches_hand_computed_values():
    np.testing.assert_allclose(huber([0.0, 0.5e-3, -2e-3], 1e-3), [0.0, 1.25e-7, 1.5e-6])
    np.testing.assert_allclose(huber([3.0], math.inf), [4.5])


def test_recovers_parameters_exactly_from_noiseless_points():
    res = fit_law(D6, power_law_d(D6, **TRUE))
    for name, value in TRUE.items():
        assert res.params[name] == pytest.approx(value, rel=1e-7)
    assert res.rmse < 1e-9
    assert res.r2 == pytest.approx(1.0)
    assert res.converged
    assert res.flags == ()


@pytest.mark.parametrize("seed", range(5))
def test_recovers_parameters_from_noisy_points(seed):
    d, y = noisy(seed)
    res = fit_law(d, y)
    assert res.params["beta"] == pytest.approx(TRUE["beta"], rel=0.15)
    assert res.params["E"] == pytest.approx(TRUE["E"], rel=0.03)
    assert res.params["B"] == pytest.approx(TRUE["B"], rel=0.10)
    # The optimiser must do at least as well as the truth on its own objective.
    loss_at_truth = huber(np.log(power_law_d(d, **TRUE)) - np.log(y), 1e-3).sum()
    assert res.loss <= loss_at_truth
    assert res.n_points == 24
    assert res.n_distinct_x == 6
    assert 0.99 < res.r2 <= 1.0


def test_recovers_very_different_scales():
    d = np.geomspace(1e9, 1e12, 5)
    params = {"E": 0.05, "B": 40.0, "beta": 0.9}
    res = fit_law(d, power_law_d(d, **params))
    for name, value in params.items():
        assert res.params[name] == pytest.approx(value, rel=1e-6)


def test_fit_is_invariant_to_sample_order():
    d, y = noisy(0)
    perm = np.random.default_rng(1).permutation(d.size)
    a, b = fit_law(d, y), fit_law(d[perm], y[perm])
    for name in TRUE:
        assert a.params[name] == pytest.approx(b.params[name], rel=1e-6)


def test_estimator_matches_plain_function_and_law():
    d, y = noisy(2)
    est = LawFit()
    assert est.fit(d, y) is est
    res = fit_law(d, y)
    grid = np.geomspace(1e5, 1e9, 11)
    np.testing.assert_allclose(est.predict(grid), res.predict(grid))
    np.testing.assert_allclose(est.predict(grid), power_law_d(grid, **est.params_))
    assert est.loss_ == res.loss
    assert est.n_points_ == 24
    assert est.converged_ is True
    assert est.flags_ == ()


def test_estimator_init_stores_settings_and_predict_needs_fit():
    est = LawFit(huber_delta=0.01, n_grid=8, offset_fractions=(0.5,))
    assert (est.huber_delta, est.n_grid, est.offset_fractions) == (0.01, 8, (0.5,))
    with pytest.raises(AnalysisError, match="not fitted"):
        est.predict(D6)
    with pytest.raises(AnalysisError, match="not fitted"):
        _ = est.params_
    assert not hasattr(est, "params_")  # scikit-learn convention: unfitted means no attribute


def test_predict_is_pure():
    d, y = noisy(3)
    est = LawFit().fit(d, y)
    before = dict(est.params_)
    first = est.predict(D6)
    est.predict(np.array([1e3, 1e12]))
    np.testing.assert_array_equal(est.predict(D6), first)
    assert dict(est.params_) == before


def test_huber_resists_an_outlier_that_squared_loss_follows():
    d, y = noisy(0)
    y = y.copy()
    y[-1] *= 1.3  # one cell at the largest D reads 30 % high (e.g. a bad eval)
    truth_at_max = power_law_d(1e8, **TRUE)
    robust = fit_law(d, y)
    squared = fit_law(d, y, huber_delta=math.inf)
    robust_err = abs(robust.predict([1e8])[0] / truth_at_max - 1)
    squared_err = abs(squared.predict([1e8])[0] / truth_at_max - 1)
    assert robust_err < 0.01
    assert squared_err > 0.03
    assert abs(robust.params["beta"] / TRUE["beta"] - 1) < 0.1
    assert abs(squared.params["beta"] / TRUE["beta"] - 1) > 0.15


def test_two_distinct_values_fit_and_are_flagged_underdetermined():
    d = np.array([1e6, 1e6, 1e8, 1e8])
    y = power_law_d(d, **TRUE)
    res = fit_law(d, y)
    assert "underdetermined" in res.flags
    assert res.n_distinct_x == 2
    # Not unique, but it passes through both points.
    np.testing.assert_allclose(res.predict([1e6, 1e8]), y[[0, 2]], rtol=1e-6)


def test_single_distinct_value_raises():
    with pytest.raises(AnalysisError, match="1 distinct D value"):
        fit_law([1e7, 1e7, 1e7], [1.0, 1.01, 0.99])


def test_less_than_one_decade_flag():
    narrow = np.geomspace(1e7, 9e7, 5)
    wide = np.geomspace(1e7, 1.1e8, 5)
    assert "less_than_one_decade_D" in fit_law(narrow, power_law_d(narrow, **TRUE)).flags
    assert "less_than_one_decade_D" not in fit_law(wide, power_law_d(wide, **TRUE)).flags


def test_exponent_beyond_its_bound_is_flagged():
    y = power_law_d(D6, E=0.8, B=1.0, beta=5.0)  # steeper than the bound of 3
    res = fit_law(D6, y)
    assert res.params["beta"] == pytest.approx(3.0, rel=1e-3)
    assert "beta_at_bound" in res.flags


def test_max_nfev_cap_is_flagged_not_converged():
    d, y = noisy(4)
    res = fit_law(d, y, max_nfev=1)
    assert not res.converged
    assert "not_converged" in res.flags


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        ([1e6, 1e7], [1.0], "pass one y per x"),
        ([1e6, -1e7], [1.0, 1.0], "x values must be finite and positive"),
        ([1e6, 1e7], [1.0, 0.0], "y values must be finite and positive"),
        ([1e6, 1e7], [1.0, np.nan], "y values must be finite and positive"),
    ],
)
def test_invalid_points_raise(x, y, match):
    with pytest.raises(AnalysisError, match=match):
        fit_law(x, y)


def test_invalid_settings_raise():
    with pytest.raises(AnalysisError, match="huber_delta"):
        fit_law(D6, power_law_d(D6, **TRUE), huber_delta=0.0)


def test_too_few_points_flag():
    d = np.geomspace(1e6, 1e8, 4)  # 4 distinct values for 3 parameters: one spare
    assert "too_few_points" in fit_law(d, power_law_d(d, **TRUE)).flags
    assert "too_few_points" not in fit_law(D6, power_law_d(D6, **TRUE)).flags


def test_disagreeing_optima_are_flagged_when_the_data_cannot_decide():
    d = np.array([1e6, 1e6, 1e8, 1e8])  # two points, three parameters: a ridge of optima
    res = fit_law(d, power_law_d(d, **TRUE))
    assert "disagreeing_optima" in res.flags
    assert len(res.optima) == res.n_starts
    assert "disagreeing_optima" not in fit_law(*noisy(0)).flags


def _curation_cells(rng, noise=0.005, spends=(10.0, 40.0, 160.0), seeds=2):
    """Cells of a source whose pool of 1e5 tokens per USD is repeated up to 50 times."""
    c, d = np.meshgrid(np.repeat(spends, seeds), np.geomspace(1e6, 1e8, 5), indexing="ij")
    c, d = c.ravel(), d.ravel()
    x = np.column_stack([0.5 * d, 1e5 * c])  # (domain tokens, unique tokens)
    y = effective_data_law(x[:, 0], x[:, 1], **EFF_TRUE)
    return x, y * np.exp(noise * rng.standard_normal(len(y)))


EFF_TRUE = {"E": 0.8, "B": 1.0, "beta": 0.4, "R_star": 5.0}


def test_effective_data_law_recovers_parameters_under_repetition():
    x, y = _curation_cells(np.random.default_rng(0), noise=0.0)
    exact = fit_law(x, y, law="effective_data")
    for name, value in EFF_TRUE.items():
        assert exact.params[name] == pytest.approx(value, rel=1e-6)
    x, y = _curation_cells(np.random.default_rng(1))
    res = fit_law(x, y, law="effective_data")
    assert res.params["beta"] == pytest.approx(0.4, rel=0.05)
    assert res.params["R_star"] == pytest.approx(5.0, rel=0.15)
    assert res.params["E"] == pytest.approx(0.8, rel=0.03)
    assert res.flags == ()


def test_repetition_half_life_is_unidentified_without_repetition():
    d = np.geomspace(1e6, 1e8, 6)
    x = np.column_stack([d, np.full(6, 1e12)])  # the pool is never exhausted
    res = fit_law(x, power_law_d(d, **TRUE), law="effective_data")
    assert "R_star_unidentified" in res.flags
    np.testing.assert_allclose(res.predict(x), power_law_d(d, **TRUE), rtol=1e-7)


@pytest.mark.parametrize("name", ["two_variable", "data_constrained"])
def test_model_size_laws_recover_parameters(name):
    truth = {"E": 0.8, "A": 0.5, "B": 1.0, "alpha": 0.3, "beta": 0.4, "R_star": 5.0}
    n, d = np.meshgrid(np.geomspace(1e6, 1e9, 4), np.geomspace(1e6, 1e9, 5), indexing="ij")
    n, d = n.ravel(), d.ravel()
    law = LAWS[name]
    cols = {"model_params": n, "train_tokens": d, "domain_tokens": 0.5 * d, "unique_tokens": 1e7}
    x = np.column_stack([np.broadcast_to(cols[c], n.shape) for c in law.columns])
    params = {p: truth[p] for p in law.param_names}
    res = fit_law(x, law.predict(x, params), law=law)
    for p, v in params.items():
        assert res.params[p] == pytest.approx(v, rel=1e-4), p


def test_user_law_fits_like_the_built_in():
    d, y = noisy(5)
    law = user_law(
        power_law_d,
        name="mine",
        variables=("D",),
        columns=("train_tokens",),
        bounds=dict(LAWS["power_law_D"].bounds),
    )
    mine, built_in = fit_law(d, y, law=law), fit_law(d, y)
    for p in TRUE:
        assert mine.params[p] == pytest.approx(built_in.params[p], rel=1e-4)
    assert mine.loss == pytest.approx(built_in.loss, rel=1e-6)


def test_estimator_with_bootstrap_gives_intervals_that_contain_the_truth():
    d, y = noisy(6)
    est = LawFit(n_boot=300, random_state=3).fit(d, y)
    intervals = est.param_intervals_
    for p, v in TRUE.items():
        lo, hi = intervals[p]
        assert lo <= est.params_[p] <= hi
        assert lo < v < hi
    lo, hi = est.predict_interval([1e9])
    assert lo[0] < est.predict([1e9])[0] < hi[0]
    assert est.bootstrap_.n_boot == 300
    with pytest.raises(AnalysisError, match="n_boot > 0"):
        LawFit().fit(d, y).predict_interval([1e9])
