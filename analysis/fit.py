"""Fit a law to points: a plain function `fit_law` and the estimator `LawFit` on top.

The objective follows Hoffmann et al. (2022, appendix D.2): the Huber loss of the
residuals of the *logarithm* of the metric,

    loss(theta) = sum_i huber_delta(log L(x_i; theta) - log y_i),

minimised over the logarithm of every parameter, so parameters stay positive and
relative errors count the same at every scale. ``huber_delta = inf`` gives the
plain squared loss (used to show what the Huber loss buys).

Search: the nonlinear parameters (the exponents) are screened on a dense
geometric grid; at each grid point the linear parameters come from non-negative
least squares on relative residuals (variable projection), once with the offset
``E`` free and once with ``E`` fixed at each of ``offset_fractions * min(y)``.
The best ``n_refine`` distinct candidates of that grid over (exponent, E) are
refined jointly by `scipy.optimize.least_squares` (trust-region reflective,
bounded, analytic Jacobian, strict tolerances) and the lowest loss wins.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares, nnls

from analysis.errors import AnalysisError, NotFittedError
from analysis.laws import Law, get_law

FLAG_DESCRIPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "underdetermined": "fewer distinct x values than law parameters; the fit is not unique",
        "not_converged": "the best start stopped before meeting the tolerances",
        "at_bound": "a parameter sits on its bound (flag names the parameter, e.g. beta_at_bound)",
        "less_than_one_decade": "the variable spans less than a factor 10 "
        "(flag names the variable, e.g. less_than_one_decade_D)",
    }
)
"""What each fit flag means, for reports."""

_AT_BOUND_LOG_TOL = 1e-3  # a parameter within 0.1 % of a bound counts as on it
_MIN_DISTINCT_X = 2


def huber(r: ArrayLike, delta: float) -> np.ndarray:
    """Huber loss per residual: ``r**2 / 2`` inside ``|r| <= delta``, linear outside.

    ``delta = inf`` gives the squared loss ``r**2 / 2``.
    """
    a = np.abs(np.asarray(r, dtype=float))
    if math.isinf(delta):
        return 0.5 * a**2
    return np.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta))


@dataclass(frozen=True, kw_only=True)
class FitResult:
    """A fitted law and how well it fits."""

    law: Law
    params: Mapping[str, float]
    """Fitted parameters by name (see ``law.formula`` for units)."""
    loss: float
    """Minimised objective: summed Huber loss of log residuals."""
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

    def predict(self, x: ArrayLike) -> np.ndarray:
        """The metric predicted by the fitted law at ``x``; shape ``(n,)``."""
        return self.law.predict(x, self.params)

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
) -> FitResult:
    """Fit ``law`` to points ``(x, y)`` by the Huber loss on ``log y``.

    Parameters
    ----------
    x : array_like
        The law's variables, shape ``(n,)`` for a one-variable law (training
        tokens for ``power_law_D``) or ``(n, k)``.
    y : array_like
        The metric, shape ``(n,)``, positive (bits per byte).
    law : str or Law
        A name from `analysis.laws.LAWS` or a `Law`.
    huber_delta : float
        Huber threshold on log residuals; 1e-3 as in Hoffmann et al. (2022).
        ``math.inf`` gives the squared loss.
    n_grid : int
        Grid points per nonlinear parameter for the screening.
    offset_fractions : sequence of float
        Values of the offset ``E``, as fractions of ``min(y)``, added to the grid.
    n_refine : int
        Distinct best candidates of the grid refined by the optimiser.
    tol : float
        ``ftol``, ``xtol`` and ``gtol`` of `scipy.optimize.least_squares`.
    max_nfev : int, optional
        Evaluation cap per start; scipy's default when None.

    Returns
    -------
    FitResult
        Always returned for two or more distinct x values, flagged where the data
        cannot determine it well (see `FLAG_DESCRIPTIONS`).

    Raises
    ------
    AnalysisError
        On fewer than two distinct x values (no curve is determined), on
        non-finite or non-positive inputs, or on invalid settings.

    References
    ----------
    .. [1] Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models",
       appendix D.2.
    .. [2] Golub and Pereyra 1973, "The differentiation of pseudo-inverses and
       nonlinear least squares problems whose variables separate" (variable
       projection).
    """
    law = get_law(law)
    xd, yv = _validate(law, x, y)
    _check_settings(huber_delta, n_grid, n_refine, tol)
    log_y = np.log(yv)
    lo = np.log([law.bounds[p][0] for p in law.param_names])
    hi = np.log([law.bounds[p][1] for p in law.param_names])

    starts = _grid_starts(law, xd, yv, lo, hi, huber_delta, n_grid, offset_fractions, n_refine)

    def residuals(u: np.ndarray) -> np.ndarray:
        return np.log(_positive(law.evaluate(xd, np.exp(u)))) - log_y

    def jacobian(u: np.ndarray) -> np.ndarray:
        theta = np.exp(u)
        pred = _positive(law.evaluate(xd, theta))  # (n,)
        return law.evaluate_grad(xd, theta) * theta[None, :] / pred[:, None]  # (n, p)

    best_u, best_loss, best_ok = starts[0], math.inf, False
    for u0 in starts:
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
        if loss < best_loss:
            best_u, best_loss, best_ok = res.x, loss, bool(res.status > 0)

    theta = np.exp(best_u)
    pred = law.evaluate(xd, theta)
    sse = float(np.sum((pred - yv) ** 2))
    sst = float(np.sum((yv - yv.mean()) ** 2))
    n_distinct = len(np.unique(xd, axis=0))
    x_range = {
        v: (float(xd[:, j].min()), float(xd[:, j].max())) for j, v in enumerate(law.variables)
    }
    return FitResult(
        law=law,
        params=MappingProxyType(law.params_dict(theta)),
        loss=best_loss,
        converged=best_ok,
        n_points=len(yv),
        n_distinct_x=n_distinct,
        rmse=math.sqrt(sse / len(yv)),
        r2=1.0 - sse / sst if sst > 0.0 else None,
        x_range=MappingProxyType(x_range),
        flags=_flags(law, best_u, lo, hi, best_ok, n_distinct, x_range),
        n_starts=len(starts),
        huber_delta=huber_delta,
    )


@dataclass(kw_only=True)
class LawFit:
    """Estimator over `fit_law`, following the scikit-learn contract.

    ``__init__`` stores the settings unchanged; ``fit(x, y)`` validates, sets
    ``params_``, ``loss_``, ``converged_``, ``n_points_``, ``rmse_``, ``r2_``,
    ``flags_`` and ``result_`` and returns ``self``; ``predict(x)`` is pure.
    Settings are those of `fit_law`.
    """

    law: str | Law = "power_law_D"
    huber_delta: float = 1e-3
    n_grid: int = 64
    offset_fractions: Sequence[float] = (0.5, 0.8, 0.9, 0.95, 0.99)
    n_refine: int = 8
    tol: float = 1e-12
    max_nfev: int | None = None
    result_: FitResult | None = field(default=None, init=False, repr=False, compare=False)

    def fit(self, x: ArrayLike, y: ArrayLike) -> LawFit:
        self.result_ = fit_law(
            x,
            y,
            law=self.law,
            huber_delta=self.huber_delta,
            n_grid=self.n_grid,
            offset_fractions=self.offset_fractions,
            n_refine=self.n_refine,
            tol=self.tol,
            max_nfev=self.max_nfev,
        )
        return self

    def predict(self, x: ArrayLike) -> np.ndarray:
        return self._fitted().predict(x)

    def _fitted(self) -> FitResult:
        if self.result_ is None:
            raise NotFittedError("LawFit is not fitted; call fit(x, y) first")
        return self.result_

    @property
    def params_(self) -> Mapping[str, float]:
        return self._fitted().params

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


def _validate(law: Law, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    xd = law.design(x)
    yv = np.asarray(y, dtype=float)
    if yv.ndim != 1 or len(yv) != len(xd):
        raise AnalysisError(f"x has {len(xd)} rows but y has shape {yv.shape}; pass one y per x")
    if not (np.all(np.isfinite(xd)) and np.all(xd > 0)):
        raise AnalysisError(f"law {law.name!r}: x values must be finite and positive")
    if not (np.all(np.isfinite(yv)) and np.all(yv > 0)):
        raise AnalysisError(f"law {law.name!r}: y values must be finite and positive")
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


def _positive(v: np.ndarray) -> np.ndarray:
    return np.maximum(v, np.finfo(float).tiny)


def _grid_starts(
    law: Law,
    xd: np.ndarray,
    y: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    huber_delta: float,
    n_grid: int,
    offset_fractions: Sequence[float],
    n_refine: int,
) -> list[np.ndarray]:
    """Best ``n_refine`` distinct log-parameter vectors of the (exponent, E) grid."""
    m = len(law.linear_params)
    off = law.linear_params.index(law.offset_param)
    others = [j for j in range(m) if j != off]
    w = 1.0 / y  # relative residuals, to mimic the log-space objective
    log_y = np.log(y)
    axes = [np.geomspace(law.bounds[p][0], law.bounds[p][1], n_grid) for p in law.nonlinear_params]
    scored: list[tuple[float, np.ndarray]] = []
    for nonlin in itertools.product(*axes):
        nl = np.array(nonlin)
        a = law.basis(xd, nl)  # (n, m)
        candidates = [nnls(a * w[:, None], y * w)[0]]
        for frac in offset_fractions:
            lin = np.zeros(m)
            lin[off] = frac * y.min()
            lin[others] = nnls(a[:, others] * w[:, None], (y - lin[off]) * w)[0]
            candidates.append(lin)
        for lin in candidates:
            theta = np.concatenate([lin, nl])
            u = np.clip(np.log(_positive(theta)), lo, hi)
            r = np.log(_positive(law.evaluate(xd, np.exp(u)))) - log_y
            scored.append((float(huber(r, huber_delta).sum()), u))
    scored.sort(key=lambda s: s[0])
    picked: list[np.ndarray] = []
    for _, u in scored:
        if all(np.max(np.abs(u - v)) > 0.05 for v in picked):
            picked.append(u)
        if len(picked) == n_refine:
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
) -> tuple[str, ...]:
    flags = []
    if n_distinct < law.n_params:
        flags.append("underdetermined")
    for j, p in enumerate(law.param_names):
        if u[j] - lo[j] < _AT_BOUND_LOG_TOL or hi[j] - u[j] < _AT_BOUND_LOG_TOL:
            flags.append(f"{p}_at_bound")
    if not converged:
        flags.append("not_converged")
    for v, (x_min, x_max) in x_range.items():
        if x_max < 10.0 * x_min:
            flags.append(f"less_than_one_decade_{v}")
    return tuple(flags)
