"""`LawFit` as a notebook user meets it: the scikit-learn contract, DataFrames, intervals
that contain the fit, pickling, JSON save/load, and user laws of any sign."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.validation import check_is_fitted

from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.fit import LawFit, fit_law
from annealscale.analysis.laws import chinchilla_law, power_law_d, user_law

TRUE = {"E": 0.8, "B": 1.0, "beta": 0.5}
D6 = np.geomspace(1e6, 1e8, 6)
FAR = np.geomspace(1e5, 1e13, 17)  # a decade below the cells to five decades beyond


def noisy(seed: int, reps: int = 3, noise: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = np.repeat(D6, reps)
    return d, power_law_d(d, **TRUE) * (1 + noise * rng.standard_normal(d.size))


# A user law from an importable function (so it pickles), with an offset that may be
# negative: the law of a metric such as a log-likelihood difference.
SIGNED_TRUE = {"E": -2.0, "A": 0.5, "B": 1.0, "alpha": 0.3, "beta": 0.4}
SIGNED = user_law(
    chinchilla_law,
    name="signed_chinchilla",
    variables=("N", "D"),
    columns=("model_params", "train_tokens"),
    bounds={"E": (-5.0, 5.0), "A": (1e-3, 10.0), "B": (1e-3, 10.0), "alpha": (0.01, 2.0),
            "beta": (0.01, 2.0)},
)  # fmt: skip


def signed_cells(seed: int, noise: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """5 model sizes x 8 token counts, additive noise; every metric is negative."""
    rng = np.random.default_rng(seed)
    n, d = np.meshgrid(np.geomspace(1e6, 1e9, 5), np.geomspace(1e6, 1e9, 8), indexing="ij")
    x = np.column_stack([n.ravel(), d.ravel()])
    y = chinchilla_law(x[:, 0], x[:, 1], **SIGNED_TRUE)
    return x, y + noise * rng.standard_normal(len(y))


def test_clone_copies_settings_and_not_the_fit():
    est = LawFit(huber_delta=0.01, n_boot=50, offset_fractions=(0.5,), random_state=4)
    est.fit(*noisy(0))
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    assert not hasattr(twin, "result_") and not hasattr(twin, "params_")
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(twin)
    check_is_fitted(est)
    with pytest.raises(AnalysisError, match="not fitted"):
        twin.predict(D6)


def test_set_params_changes_the_fit():
    d, y = noisy(1)
    y = y.copy()
    y[-1] *= 1.3  # one bad cell: the squared loss follows it, the Huber loss does not
    est = LawFit().fit(d, y)
    robust_beta = est.params_["beta"]
    assert est.set_params(huber_delta=math.inf) is est
    assert est.get_params()["huber_delta"] == math.inf
    squared_beta = est.fit(d, y).params_["beta"]
    assert abs(robust_beta / TRUE["beta"] - 1) < 0.1
    assert abs(squared_beta / robust_beta - 1) > 0.1


def test_score_is_r2_by_hand():
    d, y = noisy(2)
    est = LawFit().fit(d, y)
    pred = est.predict(d)
    by_hand = 1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert est.score(d, y) == pytest.approx(by_hand, rel=1e-12)
    assert est.score(d, y) == pytest.approx(est.r2_, rel=1e-12)
    # on other points the score is not the training R^2
    d2, y2 = noisy(9)
    assert est.score(d2, y2) != pytest.approx(est.r2_, rel=1e-9)


def test_dataframe_by_column_names_equals_arrays():
    d, y = noisy(3)
    table = pd.DataFrame({"seed": np.arange(d.size) % 3, "train_tokens": d, "bpb": y})
    from_table = LawFit().fit(table, "bpb")
    from_arrays = LawFit().fit(d, y)
    assert dict(from_table.params_) == dict(from_arrays.params_)
    np.testing.assert_array_equal(from_table.predict(table), from_arrays.predict(d))
    assert from_table.score(table, "bpb") == from_arrays.score(d, y)
    np.testing.assert_array_equal(
        LawFit().fit(table, table["bpb"]).predict(d), from_table.predict(d)
    )


def test_missing_column_is_named():
    d, y = noisy(3)
    table = pd.DataFrame({"tokens": d, "bpb": y})
    with pytest.raises(AnalysisError, match="train_tokens"):
        LawFit().fit(table, "bpb")
    with pytest.raises(AnalysisError, match="'loss'"):
        LawFit().fit(pd.DataFrame({"train_tokens": d}), "loss")
    x, y2 = signed_cells(0)
    with pytest.raises(AnalysisError, match="model_params"):
        LawFit(law=SIGNED).fit(pd.DataFrame({"train_tokens": x[:, 1]}), y2)


def test_prediction_lies_inside_both_intervals_even_far_away():
    est = LawFit(n_boot=150, random_state=1).fit(*noisy(4))
    point = est.predict(FAR)
    curve = est.predict_interval(FAR)
    pred = est.predict_interval(FAR, kind="predictive")
    for lo, hi in (curve, pred, est.predict_interval(FAR, level=0.02)):
        assert np.all((lo <= point) & (point <= hi))
    # a new cell also has noise: never narrower, and clearly wider where the curve is known
    assert np.all((pred[0] <= curve[0]) & (curve[1] <= pred[1]))
    near = est.predict_interval(D6, kind="predictive"), est.predict_interval(D6)
    assert np.all(near[0][1] - near[0][0] > 1.1 * (near[1][1] - near[1][0]))
    lo50, hi50 = est.predict_interval(FAR, level=0.5)
    assert np.all((curve[0] <= lo50) & (hi50 <= curve[1]))
    with pytest.raises(AnalysisError, match="kind"):
        est.predict_interval(FAR, kind="posterior")


def test_bootstrap_draws_are_centred_on_the_point_fit():
    est = LawFit(n_boot=101, random_state=2).fit(*noisy(5))
    boot = est.bootstrap_
    design = boot.law.design(FAR)
    draws = boot.draws_at(design)  # (B, n)
    np.testing.assert_array_equal(draws, boot.draws(FAR))
    np.testing.assert_allclose(np.median(draws, axis=0), est.predict(FAR), rtol=1e-12)
    raw = boot.draws_at(design, recentre=False)
    np.testing.assert_array_equal(raw, boot.law.evaluate(design, boot.params))
    # re-centring moves the curves, not their spread (in log space)
    np.testing.assert_allclose(np.log(draws).std(0), np.log(raw).std(0), rtol=1e-9)


def _assert_same_estimate(a: LawFit, b: LawFit) -> None:
    assert dict(a.params_) == dict(b.params_)
    np.testing.assert_array_equal(a.predict(FAR), b.predict(FAR))
    for kind in ("curve", "predictive"):
        np.testing.assert_array_equal(
            a.predict_interval(FAR, kind=kind), b.predict_interval(FAR, kind=kind)
        )
    assert a.flags_ == b.flags_ and a.loss_ == b.loss_ and a.r2_ == b.r2_


def test_pickle_round_trip_of_built_in_and_user_laws():
    built_in = LawFit(n_boot=100).fit(*noisy(6))
    again = pickle.loads(pickle.dumps(built_in))
    _assert_same_estimate(built_in, again)
    assert again.law_ is built_in.law_  # a built-in law unpickles as the registry's object
    x, y = signed_cells(1)
    mine = LawFit(law=SIGNED, n_boot=100).fit(x, y)
    mine_again = pickle.loads(pickle.dumps(mine))
    np.testing.assert_array_equal(mine_again.predict(x), mine.predict(x))
    np.testing.assert_array_equal(mine_again.predict_interval(x), mine.predict_interval(x))


def test_save_and_load_as_json(tmp_path):
    est = LawFit(n_boot=100, huber_delta=math.inf, random_state=3).fit(*noisy(7))
    path = tmp_path / "fit.json"
    est.save(path)
    doc = json.loads(path.read_text())  # plain JSON a person can read
    assert doc["law"]["name"] == "power_law_D" and doc["law"]["params"] == ["E", "B", "beta"]
    assert doc["settings"]["n_boot"] == 100 and doc["settings"]["huber_delta"] == "inf"
    assert len(doc["bootstrap"]["params"]) == 100
    loaded = LawFit.load(path)
    _assert_same_estimate(est, loaded)
    assert loaded.get_params() == est.get_params()
    without_boot = tmp_path / "plain.json"
    LawFit().fit(*noisy(7)).save(without_boot)
    assert LawFit.load(without_boot).bootstrap_ is None


def test_save_and_load_a_user_law(tmp_path):
    x, y = signed_cells(2)
    est = LawFit(law=SIGNED, n_boot=100).fit(x, y)
    path = tmp_path / "signed.json"
    est.save(path)
    with pytest.raises(AnalysisError, match="user law"):
        LawFit.load(path)
    other = user_law(
        lambda N, D, *, E, A: E + A * N,
        name="other",
        variables=("N", "D"),
        columns=("model_params", "train_tokens"),
        bounds={"E": (-1.0, 1.0), "A": (0.1, 1.0)},
    )
    with pytest.raises(AnalysisError, match="parameters"):
        LawFit.load(path, law=other)
    loaded = LawFit.load(path, law=SIGNED)
    np.testing.assert_array_equal(loaded.predict(x), est.predict(x))
    for kind in ("curve", "predictive"):
        np.testing.assert_array_equal(
            loaded.predict_interval(x, kind=kind), est.predict_interval(x, kind=kind)
        )


def test_user_law_with_a_negative_parameter_and_negative_targets():
    x, y = signed_cells(3)
    assert np.all(y < 0)
    est = LawFit(law=SIGNED, n_boot=100, n_refine=4).fit(x, y)
    assert est.params_["E"] == pytest.approx(SIGNED_TRUE["E"], abs=0.05)
    for p in ("A", "B", "alpha", "beta"):
        assert est.params_[p] == pytest.approx(SIGNED_TRUE[p], rel=0.2), p
    assert est.converged_ and est.r2_ > 0.99
    objective = est.result_.to_dict()["quality"]["objective"]
    assert objective["residual"] == "(L - y) / scale"
    assert objective["scale"] == pytest.approx(np.median(np.abs(y)))
    point = est.predict(x)
    for kind in ("curve", "predictive"):
        lo, hi = est.predict_interval(x, kind=kind)
        assert np.all((lo <= point) & (point <= hi))
    lo, hi = est.param_intervals_["E"]
    assert lo < SIGNED_TRUE["E"] < hi


def test_forced_linear_target_on_positive_data_fits_like_the_log_target():
    d, y = noisy(8)
    log_fit = fit_law(d, y)
    linear_fit = fit_law(d, y, target="linear")
    assert linear_fit.target.log is False
    for p in TRUE:
        assert linear_fit.params[p] == pytest.approx(log_fit.params[p], rel=0.05)


def test_built_in_law_refuses_non_positive_targets():
    d, y = noisy(8)
    with pytest.raises(AnalysisError, match="positive"):
        LawFit().fit(d, y - 1.0)
    with pytest.raises(AnalysisError, match="target"):
        fit_law(d, y, target="cubic")
