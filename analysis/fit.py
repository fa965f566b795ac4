"""Fit a law to points: a plain function `fit_law` and the estimator `LawFit` on top.

The objective follows Hoffmann et al. (2022, appendix D.2): the Huber loss of the
residuals of the *logarithm* of the metric,

    loss(theta) = sum_i huber_delta(log L(x_i; theta) - log y_i),

minimised over the logarithm of every parameter, so parameters stay positive and
relative errors count the same at every scale. ``huber_delta = inf`` gives the
plain squared loss (used to show what the Huber loss buys).

A user law may have parameters of any sign (those whose bounds are not positive are
moved on a linear scale over their bounds, `analysis.laws.Law.to_u`) and a metric
that is zero or negative somewhere: its residuals are then ``(L - y) / scale`` with
``scale`` the median of ``|y|`` (`analysis.solve.linear_target`), about a relative
error again, so the same Huber threshold applies. `FitResult.to_dict` records which
objective was used.

Search (separable laws): the nonlinear parameters (exponents, ``R_star``) are
screened on a dense geometric grid; at each grid point the linear parameters
come from non-negative least squares on relative residuals (variable
projection), once with the offset ``E`` free and once with ``E`` fixed at each
of ``offset_fractions * min(y)``. User laws are screened from quasi-random
starts over their bounds. The best ``n_refine`` distinct candidates are refined
jointly by `scipy.optimize.least_squares` (trust-region reflective, bounded,
analytic Jacobian, strict tolerances); the lowest loss wins, and the other
refined starts are compared with it to detect disagreeing optima.

Uncertainty: ``LawFit(n_boot=1000)`` adds a bootstrap over cells
(`analysis.bootstrap.bootstrap_law`) for parameter and prediction intervals.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.optimize import least_squares
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.metrics import r2_score

from annealscale.analysis.bootstrap import (
    Bootstrap,
    bootstrap_law,
    from_json_float,
    json_ready,
    resolve_target,
)
from annealscale.analysis.errors import AnalysisError, NotFittedError
from annealscale.analysis.laws import LAWS, FrozenMap, Law, get_law
from annealscale.analysis.solve import LOG_TARGET, Target, huber, screen

FLAG_DESCRIPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "underdetermined": "fewer distinct x values than law parameters; the fit is not unique",
        "too_few_points": "no more distinct x values than parameters plus one: nothing is left "
        "to check the law against",
        "not_converged": "the best start stopped before meeting the tolerances",
        "disagreeing_optima": "another start reached the same loss (within 0.1 %) with "
        "parameters more than 5 % away: the optimum is not well determined",
        "at_bound": "a parameter sits on its bound (flag names the parameter, e.g. beta_at_bound)",
        "unidentified": "a parameter does not change the fitted values at all (flag names it, "
        "e.g. R_star_unidentified when no cell repeats its pool)",
        "less_than_one_decade": "the variable spans less than a factor 10 "
        "(flag names the variable, e.g. less_than_one_decade_D)",
    }
)
"""What each fit flag means, for reports."""

_AT_BOUND_LOG_TOL = 1e-3  # a parameter within 0.1 % of a bound counts as on it
_MIN_DISTINCT_X = 2
_OPTIMA_LOSS_RTOL = 1e-3  # starts ending within 0.1 % of the best loss are "as good"
_OPTIMA_PARAM_TOL = 0.05  # ... and disagree if a parameter differs by more than 5 %
_UNIDENTIFIED_RTOL = 1e-8  # Jacobian column below this (relative) = parameter has no effect


@dataclass(frozen=True, kw_only=True)
class FitResult:
    """A fitted law and how well it fits."""

    law: Law
    params: Mapping[str, float]
    """Fitted parameters by name (see ``law.formula`` for units)."""
    loss: float
    """Minimised objective: summed Huber loss of the residuals (see ``target``)."""
    converged: bool
    n_points: int
    n_distinct_x: int
    rmse: float
    """Root mean squared error of the fit, in the metric's units."""
    r2: float | None
    """Coefficient of determination; None where the metric does not vary."""
    x_range: Mapping[str, tuple[float, float]]
    """``(min, max)`` of each law variable over the fitted points."""
    flags: tuple[str, ...]
    n_starts: int
    """Starts refined by the optimiser (after screening the grid)."""
    huber_delta: float
    residual_scale: float
    """Root mean square of the residuals with ``n - p`` degrees of freedom: the noise of
    one cell around the law (NaN without spare points), in the residuals' units (log of
    the metric, a relative noise, for the log target)."""
    optima: tuple[tuple[float, Mapping[str, float]], ...] = ()
    """``(loss, params)`` of every refined start, best first."""
    target: Target = LOG_TARGET
    """How residuals were taken: ``log L - log y``, or ``(L - y) / target.scale``."""

    @property
    def log_residual_scale(self) -> float:
        """`residual_scale` for the log target; NaN for a linear one."""
        return self.residual_scale if self.target.log else math.nan

    @property
    def theta(self) -> np.ndarray:
        """Parameter vector ``(p,)`` in ``law.param_names`` order."""
        return self.law.theta(self.params)

    def predict(self, x: ArrayLike) -> np.ndarray:
        """The metric predicted by the fitted law at ``x``; shape ``(n,)``."""
        return self.law.predict(x, self.params)

    def state(self) -> dict[str, Any]:
        """Every field but the law, as plain numbers, lists and dicts (for `from_state`)."""
        return {
            "params": dict(self.params),
            "loss": self.loss,
            "converged": self.converged,
            "n_points": self.n_points,
            "n_distinct_x": self.n_distinct_x,
            "rmse": self.rmse,
            "r2": self.r2,
            "x_range": {v: list(r) for v, r in self.x_range.items()},
            "flags": list(self.flags),
            "n_starts": self.n_starts,
            "huber_delta": self.huber_delta,
            "residual_scale": self.residual_scale,
            "optima": [[loss, dict(p)] for loss, p in self.optima],
            "target": {"log": self.target.log, "scale": self.target.scale},
        }

    @classmethod
    def from_state(cls, law: Law, state: Mapping[str, Any]) -> FitResult:
        """The `FitResult` of ``law`` that `state` wrote (after a JSON round trip)."""
        f = from_json_float

        def params(d: Mapping[str, Any]) -> FrozenMap:
            return FrozenMap({p: f(d[p]) for p in law.param_names})

        return cls(
            law=law,
            params=params(state["params"]),
            loss=f(state["loss"]),
            converged=bool(state["converged"]),
            n_points=int(state["n_points"]),
            n_distinct_x=int(state["n_distinct_x"]),
            rmse=f(state["rmse"]),
            r2=None if state["r2"] is None else f(state["r2"]),
            x_range=FrozenMap({v: (f(a), f(b)) for v, (a, b) in state["x_range"].items()}),
            flags=tuple(state["flags"]),
            n_starts=int(state["n_starts"]),
            huber_delta=f(state["huber_delta"]),
            residual_scale=f(state["residual_scale"]),
            optima=tuple((f(loss), params(p)) for loss, p in state["optima"]),
            target=Target(log=bool(state["target"]["log"]), scale=f(state["target"]["scale"])),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (non-finite floats are left for the writer to null)."""
        return {
            "law": self.law.name,
            "formula": self.law.formula,
            "params": dict(self.params),
            "quality": {
                "rmse": self.rmse,
                "r2": self.r2,
                "loss": self.loss,
                "huber_delta": None if math.isinf(self.huber_delta) else self.huber_delta,
                "n_points": self.n_points,
                "n_distinct_x": self.n_distinct_x,
                "converged": self.converged,
                "n_starts": self.n_starts,
                "log_residual_scale": self.log_residual_scale,
                "residual_scale": self.residual_scale,
                "objective": {
                    "loss": "sum of huber(residual, huber_delta)",
                    **self.target.describe(),
                },
            },
            "x_range": {v: list(r) for v, r in self.x_range.items()},
            "flags": list(self.flags),
        }


def fit_law(
    x: ArrayLike,
    y: ArrayLike,
    *,
    law: str | Law = "power_law_D",
    huber_delta: float = 1e-3,
    n_grid: int = 64,
    offset_fractions: Sequence[float] = (0.5, 0.8, 0.9, 0.95, 0.99),
    n_refine: int = 8,
    tol: float = 1e-12,
    max_nfev: int | None = None,
    target: str | Target = "auto",
) -> FitResult:
    """Fit ``law`` to points ``(x, y)`` by the Huber loss on ``log y`` (or on ``y``).

    Parameters
    ----------
    x : array_like
        The law's variables, shape ``(n,)`` for a one-variable law (training
        tokens for ``power_law_D``) or ``(n, k)``.
    y : array_like
        The metric, shape ``(n,)``: positive (bits per byte) for a built-in law; any
        finite values for a user law.
    law : str or Law
        A name from `analysis.laws.LAWS` or a `Law` (e.g. from `analysis.laws.user_law`).
    huber_delta : float
        Huber threshold on log residuals; 1e-3 as in Hoffmann et al. (2022).
        ``math.inf`` gives the squared loss.
    n_grid : int
        Grid points per nonlinear parameter for the screening (capped so that the
        whole grid has at most `analysis.solve.MAX_GRID_POINTS` points).
    offset_fractions : sequence of float
        Values of the offset ``E``, as fractions of ``min(y)``, added to the grid.
    n_refine : int
        Distinct best candidates of the grid refined by the optimiser.
    tol : float
        ``ftol``, ``xtol`` and ``gtol`` of `scipy.optimize.least_squares`.
    max_nfev : int, optional
        Evaluation cap per start; scipy's default when None.
    target : {"auto", "log", "linear"} or Target
        Residuals of ``log y`` (``"log"``), or ``(L - y) / scale`` with ``scale`` the
        median of ``|y|`` (``"linear"``, see `analysis.solve.linear_target`);
        ``"auto"`` takes log residuals when every ``y > 0`` and linear ones otherwise.

    Returns
    -------
    FitResult
        Always returned for two or more distinct x values, flagged where the data
        cannot determine it well (see `FLAG_DESCRIPTIONS`).

    Raises
    ------
    AnalysisError
        On fewer than two distinct x values (no curve is determined), on
        non-finite inputs, non-positive x, a non-positive y for a built-in law or
        the log target, or on invalid settings.

    References
    ----------
    .. [1] Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models",
       appendix D.2.
    .. [2] Golub and Pereyra 1973, "The differentiation of pseudo-inverses and
       nonlinear least squares problems whose variables separate" (variable
       projection).
    .. [3] Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt"
       (why one start, loose tolerances and rounded parameters mislead).
    """
    law = get_law(law)
    xd, yv = _validate(law, x, y)
    _check_settings(huber_delta, n_grid, n_refine, tol)
    tgt = resolve_target(law, yv, target)
    t = tgt.transform(yv)  # log y for the log target
    lo, hi = law.u_bounds()

    cand = screen(
        law,
        xd,
        yv[None, :],
        np.ones((1, len(yv))),
        n_grid=n_grid,
        offset_fractions=offset_fractions,
        delta=huber_delta,
        target=tgt,
    )
    starts = _distinct_best(cand.u[0], cand.score[0], n_refine)

    def residuals(u: np.ndarray) -> np.ndarray:
        return tgt.of_prediction(law.evaluate(xd, law.to_theta(u))) - t

    def jacobian(u: np.ndarray) -> np.ndarray:
        theta = law.to_theta(u)
        pred, grad = law.evaluate_with_grad(xd, theta)  # (n,), (n, p)
        return tgt.jacobian(grad, law.dtheta_du(theta), pred)  # (n, p): d residual / d u

    refined: list[tuple[float, np.ndarray, bool]] = []
    for u0 in starts:
        with np.errstate(all="ignore"):
            res = least_squares(
                residuals,
                u0,
                jac=jacobian,
                bounds=(lo, hi),
                method="trf",
                loss="linear" if math.isinf(huber_delta) else "huber",
                f_scale=1.0 if math.isinf(huber_delta) else huber_delta,
                x_scale="jac",
                ftol=tol,
                xtol=tol,
                gtol=tol,
                max_nfev=max_nfev,
            )
        loss = float(huber(res.fun, huber_delta).sum())
        refined.append((loss if math.isfinite(loss) else math.inf, res.x, bool(res.status > 0)))
    refined.sort(key=lambda t: t[0])
    best_loss, best_u, best_ok = refined[0]

    theta = law.to_theta(best_u)
    pred = law.evaluate(xd, theta)
    sse = float(np.sum((pred - yv) ** 2))
    sst = float(np.sum((yv - yv.mean()) ** 2))
    n_distinct = len(np.unique(xd, axis=0))
    res_t = tgt.of_prediction(pred) - t
    dof = len(yv) - law.n_params
    x_range = {
        v: (float(xd[:, j].min()), float(xd[:, j].max())) for j, v in enumerate(law.variables)
    }
    flags = _flags(law, best_u, lo, hi, best_ok, n_distinct, x_range)
    flags += _optima_flags(refined)
    flags += _unidentified_flags(law, xd, best_u, jacobian)
    return FitResult(
        law=law,
        params=FrozenMap(law.params_dict(theta)),
        loss=best_loss,
        converged=best_ok,
        n_points=len(yv),
        n_distinct_x=n_distinct,
        rmse=math.sqrt(sse / len(yv)),
        r2=1.0 - sse / sst if sst > 0.0 else None,
        x_range=FrozenMap(x_range),
        flags=tuple(_ordered(flags)),
        n_starts=len(starts),
        huber_delta=huber_delta,
        residual_scale=math.sqrt(float(np.sum(res_t**2)) / dof) if dof > 0 else math.nan,
        optima=tuple((loss, FrozenMap(law.params_dict(law.to_theta(u)))) for loss, u, _ in refined),
        target=tgt,
    )


class LawFit(RegressorMixin, BaseEstimator):
    """Estimator over `fit_law` (and `bootstrap_law`): a scikit-learn regressor.

    ``__init__`` stores the settings unchanged (so `sklearn.base.clone`,
    ``get_params`` and ``set_params`` work); ``fit(X, y)`` validates, sets ``law_``,
    ``result_`` and ``bootstrap_`` (``None`` unless ``n_boot > 0``) and returns
    ``self``; ``params_``, ``loss_``, ``converged_``, ``n_points_``, ``rmse_``,
    ``r2_``, ``flags_`` and ``param_intervals_`` read the fit. ``predict``,
    ``predict_interval`` and ``score`` (R^2) are pure. A fitted estimator pickles
    (a user law's function must be importable) and `save`/`load` it as JSON.

    ``X`` is a DataFrame holding the law's columns (``law.columns``, e.g.
    ``train_tokens``), or an array ``(n,)`` / ``(n, k)`` of the law's variables in
    order. ``y`` is an array or Series, or the name of a column of the DataFrame.

    Parameters
    ----------
    law, huber_delta, n_grid, offset_fractions, n_refine, tol, max_nfev, target
        As in `fit_law`.
    n_boot : int
        Bootstrap resamples over cells (`bootstrap_law`); 0 for none. At least 1000
        for reported intervals.
    level : float
        Default central level of the intervals (fraction).
    random_state : int
        Seed of the resampling and of the predictive noise draws.
    """

    def __init__(
        self,
        *,
        law: str | Law = "power_law_D",
        huber_delta: float = 1e-3,
        n_grid: int = 64,
        offset_fractions: Sequence[float] = (0.5, 0.8, 0.9, 0.95, 0.99),
        n_refine: int = 8,
        tol: float = 1e-12,
        max_nfev: int | None = None,
        target: str = "auto",
        n_boot: int = 0,
        level: float = 0.9,
        random_state: int = 0,
    ) -> None:
        self.law = law
        self.huber_delta = huber_delta
        self.n_grid = n_grid
        self.offset_fractions = offset_fractions
        self.n_refine = n_refine
        self.tol = tol
        self.max_nfev = max_nfev
        self.target = target
        self.n_boot = n_boot
        self.level = level
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> LawFit:
        """Fit the law (and its bootstrap when ``n_boot > 0``); returns ``self``."""
        law = get_law(self.law)
        xd, yv = law_design(law, X), _target_values(X, y)
        result = fit_law(
            xd,
            yv,
            law=law,
            huber_delta=self.huber_delta,
            n_grid=self.n_grid,
            offset_fractions=self.offset_fractions,
            n_refine=self.n_refine,
            tol=self.tol,
            max_nfev=self.max_nfev,
            target=self.target,
        )
        boot = None
        if self.n_boot > 0:
            boot = bootstrap_law(
                xd,
                yv,
                law=law,
                n_boot=self.n_boot,
                huber_delta=self.huber_delta,
                seed=self.random_state,
                start=result.theta,
                target=result.target,
            )
        self.law_, self.result_, self.bootstrap_ = law, result, boot
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The fitted law at ``X``; shape ``(n,)``."""
        res = self._fitted()
        return res.law.evaluate(law_design(res.law, X), res.theta)

    def predict_interval(
        self, X: Any, level: float | None = None, kind: str = "curve"
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)`` bootstrap interval at ``X``, each ``(n,)``.

        ``kind="curve"``: where the fitted curve lies. ``kind="predictive"``: where a new
        single observation lies (the curve plus the fit's residual noise). Both contain
        `predict` (see `analysis.bootstrap.Bootstrap.interval`).
        """
        res = self._fitted()
        if self.bootstrap_ is None:
            raise NotFittedError("predict_interval needs LawFit(n_boot > 0)")
        level = self.level if level is None else level
        return self.bootstrap_.interval(law_design(res.law, X), level, kind=kind)

    def score(self, X: Any, y: Any = None, sample_weight: ArrayLike | None = None) -> float:
        """Coefficient of determination R^2 of `predict` against ``y`` (a column name too)."""
        return float(r2_score(_target_values(X, y), self.predict(X), sample_weight=sample_weight))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted estimator as human-readable JSON (see `load`).

        Holds the law (name, formula, parameter names, bounds), the settings, the
        fitted parameters with their quality and flags, and the bootstrap's
        parameter draws; nothing is pickled, so a user law's function is not saved.
        """
        res = self._fitted()
        settings = dict(self.get_params())
        settings["law"] = res.law.name
        doc = {
            "format": _SAVE_FORMAT,
            "law": res.law.describe(),
            "builtin_law": LAWS.get(res.law.name) is res.law,
            "settings": settings,
            "fit": res.state(),
            "bootstrap": None if self.bootstrap_ is None else self.bootstrap_.state(),
        }
        Path(path).write_text(json.dumps(json_ready(doc), indent=1, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str], law: Law | None = None) -> LawFit:
        """A fitted estimator from `save`'s JSON; it predicts exactly as the saved one.

        A built-in law is found by name; a user law must be passed as ``law`` (its
        parameter names are checked against the file's).
        """
        doc = json.loads(Path(path).read_text())
        if doc.get("format") != _SAVE_FORMAT:
            raise AnalysisError(f"{path}: not a saved LawFit (format {doc.get('format')!r})")
        saved = doc["law"]
        if law is None:
            if not doc["builtin_law"] or saved["name"] not in LAWS:
                raise AnalysisError(
                    f"{path}: law {saved['name']!r} is a user law; pass it as "
                    "LawFit.load(path, law=user_law(...))"
                )
            law = LAWS[saved["name"]]
        if list(law.param_names) != list(saved["params"]):
            raise AnalysisError(
                f"{path}: the saved law {saved['name']!r} has parameters {saved['params']}, "
                f"but the law passed has {list(law.param_names)}"
            )
        settings = dict(doc["settings"])
        settings["law"] = (
            saved["name"] if doc["builtin_law"] and law is LAWS.get(saved["name"]) else law
        )
        settings["huber_delta"] = float(settings["huber_delta"])
        settings["offset_fractions"] = tuple(settings["offset_fractions"])
        est = cls(**settings)
        est.law_ = law
        est.result_ = FitResult.from_state(law, doc["fit"])
        est.bootstrap_ = (
            None if doc["bootstrap"] is None else Bootstrap.from_state(law, doc["bootstrap"])
        )
        return est

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "result_")

    def _fitted(self) -> FitResult:
        res = self.__dict__.get("result_")
        if res is None:
            raise NotFittedError("LawFit is not fitted; call fit(X, y) first")
        return res

    @property
    def params_(self) -> Mapping[str, float]:
        return self._fitted().params

    @property
    def param_intervals_(self) -> Mapping[str, tuple[float, float]]:
        """Bootstrap percentile interval of each parameter at ``level``."""
        self._fitted()
        if self.bootstrap_ is None:
            raise NotFittedError("param_intervals_ needs LawFit(n_boot > 0)")
        return self.bootstrap_.param_intervals(self.level)

    @property
    def loss_(self) -> float:
        return self._fitted().loss

    @property
    def converged_(self) -> bool:
        return self._fitted().converged

    @property
    def n_points_(self) -> int:
        return self._fitted().n_points

    @property
    def rmse_(self) -> float:
        return self._fitted().rmse

    @property
    def r2_(self) -> float | None:
        return self._fitted().r2

    @property
    def flags_(self) -> tuple[str, ...]:
        return self._fitted().flags


_SAVE_FORMAT = "annealscale.LawFit/1"


def law_design(law: Law, X: Any) -> np.ndarray:
    """The design ``(n, k)`` of ``X``: a DataFrame's ``law.columns``, or an array's values.

    Raises
    ------
    AnalysisError
        Naming the law's columns a DataFrame lacks.
    """
    if isinstance(X, pd.DataFrame):
        missing = [c for c in law.columns if c not in X.columns]
        if missing:
            raise AnalysisError(
                f"law {law.name!r} needs column(s) {missing} (variables "
                f"{dict(zip(law.variables, law.columns, strict=True))}); the table has "
                f"{list(X.columns)}"
            )
        return law.design(X.loc[:, list(law.columns)].to_numpy(dtype=float))
    return law.design(X)


def _target_values(X: Any, y: Any) -> np.ndarray:
    """``y`` as an array; a string names a column of the DataFrame ``X``."""
    if isinstance(y, str):
        if not isinstance(X, pd.DataFrame):
            raise AnalysisError(f"y={y!r} names a column, so X must be a DataFrame")
        if y not in X.columns:
            raise AnalysisError(f"y column {y!r} is not in the table; it has {list(X.columns)}")
        return X[y].to_numpy(dtype=float)
    if y is None:
        raise AnalysisError("pass y: the metric, or the name of its column in X")
    return np.asarray(y, dtype=float)


def _validate(law: Law, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    xd = law.design(x)
    yv = np.asarray(y, dtype=float)
    if yv.ndim != 1 or len(yv) != len(xd):
        raise AnalysisError(f"x has {len(xd)} rows but y has shape {yv.shape}; pass one y per x")
    if not (np.all(np.isfinite(xd)) and np.all(xd > 0)):
        raise AnalysisError(f"law {law.name!r}: x values must be finite and positive")
    if law.separable and not (np.all(np.isfinite(yv)) and np.all(yv > 0)):
        raise AnalysisError(
            f"law {law.name!r}: y values must be finite and positive (the built-in laws "
            "model a positive metric; a user law may take any finite y)"
        )
    if not np.all(np.isfinite(yv)):
        raise AnalysisError(f"law {law.name!r}: y values must be finite")
    n_distinct = len(np.unique(xd, axis=0)) if len(xd) else 0
    if n_distinct < _MIN_DISTINCT_X:
        raise AnalysisError(
            f"cannot fit {law.name!r} to {n_distinct} distinct {'/'.join(law.variables)} "
            f"value(s); need at least {_MIN_DISTINCT_X} ({law.n_params} to determine every "
            "parameter)"
        )
    return xd, yv


def _check_settings(huber_delta: float, n_grid: int, n_refine: int, tol: float) -> None:
    if not huber_delta > 0:
        raise AnalysisError(
            f"huber_delta must be positive (math.inf for squared loss); got {huber_delta}"
        )
    if n_grid < 2 or n_refine < 1:
        raise AnalysisError(f"need n_grid >= 2 and n_refine >= 1; got {n_grid} and {n_refine}")
    if not np.finfo(float).eps <= tol < 1:
        raise AnalysisError(f"tol must lie in [machine epsilon, 1); got {tol}")


def _distinct_best(u: np.ndarray, score: np.ndarray, n: int) -> list[np.ndarray]:
    """The ``n`` lowest-scoring candidates at least 0.05 apart in every log-parameter."""
    picked: list[np.ndarray] = []
    for i in np.argsort(score, kind="stable"):
        if all(np.max(np.abs(u[i] - v)) > 0.05 for v in picked):
            picked.append(u[i])
        if len(picked) == n:
            break
    return picked


def _flags(
    law: Law,
    u: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    converged: bool,
    n_distinct: int,
    x_range: Mapping[str, tuple[float, float]],
) -> list[str]:
    flags = []
    if n_distinct < law.n_params:
        flags.append("underdetermined")
    elif n_distinct <= law.n_params + 1:
        flags.append("too_few_points")
    for j, p in enumerate(law.param_names):
        if u[j] - lo[j] < _AT_BOUND_LOG_TOL or hi[j] - u[j] < _AT_BOUND_LOG_TOL:
            flags.append(f"{p}_at_bound")
    if not converged:
        flags.append("not_converged")
    for v, (x_min, x_max) in x_range.items():
        if x_max < 10.0 * x_min:
            flags.append(f"less_than_one_decade_{v}")
    return flags


def _optima_flags(refined: list[tuple[float, np.ndarray, bool]]) -> list[str]:
    best_loss, best_u, _ = refined[0]
    limit = best_loss * (1.0 + _OPTIMA_LOSS_RTOL) + 1e-15
    for loss, u, _ in refined[1:]:
        if loss <= limit and np.max(np.abs(u - best_u)) > _OPTIMA_PARAM_TOL:
            return ["disagreeing_optima"]
    return []


def _unidentified_flags(law: Law, xd: np.ndarray, u: np.ndarray, jacobian: Any) -> list[str]:
    jac = jacobian(u)  # (n, p): d log L / d log theta
    norms = np.sqrt(np.sum(jac**2, axis=0))
    scale = max(float(norms.max()), np.finfo(float).tiny)
    return [
        f"{p}_unidentified"
        for p, nrm in zip(law.param_names, norms, strict=True)
        if p not in law.linear_params and nrm <= _UNIDENTIFIED_RTOL * scale
    ]


def _ordered(flags: list[str]) -> list[str]:
    seen: list[str] = []
    for f in flags:
        if f not in seen:
            seen.append(f)
    return seen
