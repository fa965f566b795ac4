from __future__ import annotations

import numpy as np
import pytest

from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.laws import (
    D_REF,
    EFFECTIVE_DATA,
    LAWS,
    POWER_LAW_D,
    effective_data_law,
    effective_tokens,
    get_law,
    power_law_d,
    user_law,
)


def test_power_law_d_matches_hand_computed_values():
    # E + B * (D / 1e6) ** -beta with beta = 0.5: D = 4e6 -> 1 + 2 / 2 = 2.
    out = power_law_d(np.array([1e6, 4e6, 1e8]), E=1.0, B=2.0, beta=0.5)
    np.testing.assert_allclose(out, [3.0, 2.0, 1.2], rtol=1e-15)


def test_law_record_predicts_the_plain_function():
    d = np.geomspace(1e5, 1e10, 7)
    params = {"E": 0.7, "B": 0.4, "beta": 0.31}
    np.testing.assert_allclose(POWER_LAW_D.predict(d, params), power_law_d(d, **params))


def test_gradient_matches_finite_differences():
    x = POWER_LAW_D.design(np.geomspace(3e5, 3e9, 9))
    theta = np.array([0.8, 0.6, 0.4])
    grad = POWER_LAW_D.evaluate_grad(x, theta)  # (n, p)
    eps = 1e-6
    for j in range(3):
        step = np.zeros(3)
        step[j] = eps
        fd = (POWER_LAW_D.evaluate(x, theta + step) - POWER_LAW_D.evaluate(x, theta - step)) / (
            2 * eps
        )
        np.testing.assert_allclose(grad[:, j], fd, rtol=1e-6, atol=1e-9)


def test_parameterisation_is_relative_to_one_million_tokens():
    assert D_REF == 1e6
    assert power_law_d(D_REF, E=0.5, B=0.25, beta=1.7) == pytest.approx(0.75)


def test_registry_resolves_names_and_rejects_unknown_ones():
    assert get_law("power_law_D") is POWER_LAW_D
    assert get_law(POWER_LAW_D) is POWER_LAW_D
    with pytest.raises(AnalysisError, match=r"unknown law 'nope'.*power_law_D"):
        get_law("nope")
    with pytest.raises(TypeError):
        LAWS["other"] = POWER_LAW_D  # type: ignore[index]


def test_design_rejects_wrong_number_of_variables():
    with pytest.raises(AnalysisError, match="takes 1 variable"):
        POWER_LAW_D.design(np.ones((4, 2)))


ALL_THETA = {
    "power_law_D": {"E": 0.8, "B": 0.6, "beta": 0.4},
    "effective_data": {"E": 0.8, "B": 0.6, "beta": 0.4, "R_star": 5.0},
    "effective_data_quality": {"E": 0.8, "B": 0.6, "beta": 0.4, "R_star": 5.0, "kappa": 0.1},
    "two_variable": {"E": 0.8, "A": 0.5, "B": 0.6, "alpha": 0.3, "beta": 0.4},
    "data_constrained": {"E": 0.8, "A": 0.5, "B": 0.6, "alpha": 0.3, "beta": 0.4, "R_star": 5.0},
}


def _design(law) -> np.ndarray:
    rng = np.random.default_rng(0)
    cols = {
        "train_tokens": np.geomspace(3e5, 3e9, 9),
        "domain_tokens": np.geomspace(1e5, 1e9, 9),  # from 1/100 to 100 epochs of the pools
        "unique_tokens": rng.permutation(np.geomspace(1e6, 1e8, 9)) + 1.0,
        "model_params": np.geomspace(1e6, 1e9, 9),
    }
    return np.column_stack([cols[c] for c in law.columns])


@pytest.mark.parametrize("name", sorted(ALL_THETA))
def test_every_law_gradient_matches_finite_differences(name):
    law = LAWS[name]
    x = _design(law)
    theta = law.theta(ALL_THETA[name])
    grad = law.evaluate_grad(x, theta)  # (n, p)
    for j in range(law.n_params):
        eps = 1e-6 * theta[j]
        step = np.zeros(law.n_params)
        step[j] = eps
        fd = (law.evaluate(x, theta + step) - law.evaluate(x, theta - step)) / (2 * eps)
        np.testing.assert_allclose(grad[:, j], fd, rtol=1e-5, atol=1e-9)
    pred, grad2 = law.evaluate_with_grad(x, theta)
    np.testing.assert_allclose(pred, law.evaluate(x, theta))
    np.testing.assert_allclose(grad2, grad)


@pytest.mark.parametrize("name", sorted(ALL_THETA))
def test_every_law_evaluates_a_batch_of_parameters_like_a_loop(name):
    law = LAWS[name]
    x = _design(law)
    base = law.theta(ALL_THETA[name])
    batch = base * np.linspace(0.8, 1.2, 4)[:, None]  # (4, p)
    looped = np.stack([law.evaluate(x, t) for t in batch])
    np.testing.assert_allclose(law.evaluate(x, batch), looped, rtol=1e-12)
    np.testing.assert_allclose(
        law.evaluate_grad(x, batch), np.stack([law.evaluate_grad(x, t) for t in batch])
    )


def test_effective_tokens_matches_hand_computed_values():
    # 0.5 epoch: all unique; 1 epoch: all unique; 3 epochs with R*=2: U + U*2*(1-e^-1).
    out = effective_tokens([50.0, 100.0, 300.0], 100.0, 2.0)
    np.testing.assert_allclose(out, [50.0, 100.0, 100.0 + 200.0 * (1 - np.exp(-1.0))])
    # repeated data saturates at U * (1 + R*)
    assert effective_tokens(1e12, 100.0, 2.0) == pytest.approx(300.0)


def test_effective_data_law_reduces_to_the_power_law_without_repetition():
    d = np.geomspace(1e6, 1e8, 5)
    np.testing.assert_allclose(
        EFFECTIVE_DATA.predict(np.column_stack([d, np.full(5, 1e12)]), ALL_THETA["effective_data"]),
        power_law_d(d, E=0.8, B=0.6, beta=0.4),
    )
    law_value = effective_data_law(d, 1e12, E=0.8, B=0.6, beta=0.4, R_star=5.0)
    np.testing.assert_allclose(law_value, power_law_d(d, E=0.8, B=0.6, beta=0.4))


def test_user_law_from_a_plain_function():
    law = user_law(
        power_law_d,
        name="mine",
        variables=("D",),
        columns=("train_tokens",),
        bounds={"E": (1e-3, 10.0), "B": (1e-3, 10.0), "beta": (1e-3, 3.0)},
    )
    d = np.geomspace(1e6, 1e9, 6)
    params = {"E": 0.7, "B": 0.4, "beta": 0.31}
    np.testing.assert_allclose(law.predict(d, params), power_law_d(d, **params))
    batch = np.array([[0.7, 0.4, 0.31], [0.6, 0.5, 0.2]])
    assert law.evaluate(law.design(d), batch).shape == (2, 6)
    grad = law.evaluate_grad(law.design(d), batch[0])
    np.testing.assert_allclose(grad, POWER_LAW_D.evaluate_grad(law.design(d), batch[0]), rtol=1e-5)


def test_user_law_that_does_not_broadcast_is_called_per_vector():
    def scalar_only(D, *, E, B, beta):
        return np.array([E + B * float(d / 1e6) ** -beta for d in D])

    law = user_law(
        scalar_only,
        name="loop",
        variables=("D",),
        columns=("train_tokens",),
        bounds={"E": (1e-3, 10.0), "B": (1e-3, 10.0), "beta": (1e-3, 3.0)},
    )
    d = np.geomspace(1e6, 1e9, 4)
    batch = np.array([[0.7, 0.4, 0.31], [0.6, 0.5, 0.2]])
    expected = np.stack([power_law_d(d, E=e, B=b, beta=k) for e, b, k in batch])
    np.testing.assert_allclose(law.evaluate(law.design(d), batch), expected)


def test_user_law_bounds_are_checked():
    with pytest.raises(AnalysisError, match="finite with lo < hi"):
        user_law(
            lambda D, *, E: E + 0 * D,
            name="bad",
            variables=("D",),
            columns=("train_tokens",),
            bounds={"E": (1.0, 0.5)},
        )
