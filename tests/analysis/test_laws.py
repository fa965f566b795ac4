from __future__ import annotations

import numpy as np
import pytest

from analysis.errors import AnalysisError
from analysis.laws import D_REF, LAWS, POWER_LAW_D, get_law, power_law_d


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
