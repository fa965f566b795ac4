"""Bootstrap over cells: a thousand refits of a law at once, for honest intervals.

Each resample draws the cells (rows) with replacement; a resample is a vector of
counts used as weights, so all resamples share one design and are fitted
together by the batched solver (`analysis.solve`): screen the nonlinear
parameters on a grid for every resample, start also from the full-data optimum,
refine both by a batched Levenberg-Marquardt on the same Huber objective as
`analysis.fit.fit_law` (log residuals, or scaled linear ones for a metric that is
not positive), keep the better. Resamples that see fewer distinct x
values than the law has parameters (or than the data has, if fewer) are drawn
again: such a resample cannot determine the curve, and keeping it would report
the bounds rather than the data.

Rows are put in a canonical order before resampling, so the result does not
depend on the order of the input rows.

Curves are re-centred on the full-data fit: at each x the resampled curves are
shifted (in log space for a positive metric, additively otherwise) so that their
median is the point prediction. A percentile interval then always contains the
fitted curve, which a refit that lands in another basin, or a bootstrap median
biased away from the point fit at far extrapolation, would otherwise break; the
spread of the curves, which is what the interval reports, is unchanged.

References
----------
.. [1] Efron and Tibshirani 1993, "An Introduction to the Bootstrap", ch. 9
   (bootstrapping pairs in regression) and ch. 13 (percentile intervals).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.laws import Law, get_law
from annealscale.analysis.solve import (
    LOG_TARGET,
    Target,
    best_starts,
    linear_target,
    objective,
    refine,
)

BOOT_GRID = 16
"""Grid points per nonlinear parameter when screening resamples (the full-data optimum
is a second start, so the grid is a safety net, not the search)."""
BOOT_MAX_GRID_POINTS = 512
_REDRAWS = 20


@dataclass(frozen=True, kw_only=True)
class Bootstrap:
    """Bootstrap refits of one law: ``params (..., B, p)``, leading axes for stacked data sets.

    ``params`` are the raw refits; `draws`, `draws_at`, `interval` and
    `observation_draws` give their curves re-centred on the full-data fit ``point``
    (see the module notes), so every interval contains the point prediction.
    """

    law: Law
    params: np.ndarray
    """(..., B, p) fitted parameters of each resample (raw, not re-centred)."""
    point: np.ndarray
    """(..., p) parameters fitted to all the cells."""
    converged: np.ndarray
    """(..., B) whether each refit met its tolerance."""
    n_points: int
    n_distinct_x: int
    residual_scale: np.ndarray
    """(...) root mean square residual of the full fit with ``n - p`` degrees of freedom,
    in ``target``'s residual units (log of the metric for the log target)."""
    seed: int
    target: Target = LOG_TARGET
    """How residuals were taken (log, or linear over a scale in the metric's units)."""

    @property
    def n_boot(self) -> int:
        return int(self.params.shape[-2])

    @property
    def log_residual_scale(self) -> np.ndarray:
        """`residual_scale` for the log target; NaN for a linear one."""
        if self.target.log:
            return self.residual_scale
        return np.full(np.shape(self.residual_scale), np.nan)

    def draws(self, x: ArrayLike) -> np.ndarray:
        """The re-centred curve of every resample at ``x``: ``(..., B, n)``."""
        return self.draws_at(self.law.design(x))

    def draws_at(self, design: np.ndarray, *, recentre: bool = True) -> np.ndarray:
        """The curve of every resample at a built design ``(n, k)``: ``(..., B, n)``.

        Re-centred per x so that the median over resamples equals the point
        prediction: ``exp(log d - median(log d) + log point)`` where the metric and
        every value at that x are positive, ``d - median(d) + point`` otherwise.
        ``recentre=False`` gives the raw refits' curves.
        """
        raw = self.law.evaluate(design, self.params)  # (..., B, n)
        if not recentre:
            return raw
        point = self.point_at(design)[..., None, :]  # (..., 1, n)
        if self.target.log:
            positive = np.all(raw > 0.0, axis=-2, keepdims=True) & (point > 0.0)
        else:
            positive = np.zeros(point.shape, dtype=bool)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_raw = np.log(np.where(positive, raw, 1.0))
            shifted = np.exp(
                log_raw
                - np.median(log_raw, axis=-2, keepdims=True)
                + np.log(np.where(positive, point, 1.0))
            )
        additive = raw - np.median(raw, axis=-2, keepdims=True) + point
        return np.where(positive, shifted, additive)

    def point_at(self, design: np.ndarray) -> np.ndarray:
        """The full-data fit at a built design ``(n, k)``: ``(..., n)``."""
        return self.law.evaluate(design, self.point)

    def interval(
        self, x: ArrayLike, level: float = 0.9, *, kind: str = "curve", n_seeds: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval at ``x``: ``(lower, upper)``, each ``(..., n)``.

        ``kind="curve"``: of the fitted curve. ``kind="predictive"``: of a new
        observation (the mean of ``n_seeds`` seeds), the curve plus the fit's residual
        noise (`observation_draws`). Either contains the point prediction: the draws
        are centred on it, and the bounds are widened to it where rounding (or, for a
        tiny level, the noise draws) would leave it a hair outside. The predictive
        interval contains the curve interval: where the curve's spread dwarfs the
        noise (far extrapolation) the Monte Carlo error of the noise draws could
        otherwise make it a little narrower.
        """
        if kind not in ("curve", "predictive"):
            raise AnalysisError(f"interval kind must be 'curve' or 'predictive'; got {kind!r}")
        _check_level(level)
        design = self.law.design(x)
        q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
        point = self.point_at(design)
        lo, hi = np.quantile(self.draws_at(design), q, axis=-2)
        lo, hi = np.minimum(lo, point), np.maximum(hi, point)
        if kind == "predictive":
            obs = self._observation_draws_at(design, n_seeds=n_seeds, rng=None)
            obs_lo, obs_hi = np.quantile(obs, q, axis=-2)
            lo, hi = np.minimum(lo, obs_lo), np.maximum(hi, obs_hi)
        return lo, hi

    def observation_draws(
        self, x: ArrayLike, *, n_seeds: int = 1, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Draws of a new observation (mean of ``n_seeds`` seeds) at ``x``: ``(..., B, n)``.

        The re-centred curve draws times ``exp(sigma * z / sqrt(n_seeds))`` for the log
        target, plus ``scale * sigma * z / sqrt(n_seeds)`` for a linear one; ``z``
        standard normal and ``sigma`` the residual scale of the full fit. The default
        ``rng`` is seeded from ``seed``, so the draws are reproducible.
        """
        return self._observation_draws_at(self.law.design(x), n_seeds=n_seeds, rng=rng)

    def _observation_draws_at(
        self, design: np.ndarray, *, n_seeds: int, rng: np.random.Generator | None
    ) -> np.ndarray:
        rng = rng or np.random.default_rng(self.seed + 1)
        d = self.draws_at(design)
        sigma = np.nan_to_num(np.asarray(self.residual_scale, dtype=float), nan=0.0)
        noise = sigma[..., None, None] * rng.standard_normal(d.shape) / math.sqrt(max(n_seeds, 1))
        if self.target.log:
            return d * np.exp(noise)
        return d + self.target.scale * noise

    def param_intervals(self, level: float = 0.9) -> dict[str, tuple[float, float]]:
        """Percentile interval of each parameter (a single data set)."""
        _check_level(level)
        q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
        lo, hi = np.quantile(self.params, q, axis=-2)  # (p,) each
        return {
            p: (float(a), float(b))
            for p, a, b in zip(self.law.param_names, np.ravel(lo), np.ravel(hi), strict=False)
        }

    def at_bound_fraction(self) -> dict[str, float]:
        """Share of resamples with each parameter within 0.1 % of a bound."""
        lo, hi = self.law.u_bounds()
        u = self.law.to_u(self.params)
        on = (u - lo < 1e-3) | (hi - u < 1e-3)  # (..., B, p)
        frac = on.mean(axis=-2)
        return {p: float(np.mean(frac[..., j])) for j, p in enumerate(self.law.param_names)}

    def state(self) -> dict[str, Any]:
        """Everything but the law, as plain lists and numbers (for `from_state`)."""
        return {
            "params": self.params.tolist(),
            "point": self.point.tolist(),
            "converged": self.converged.tolist(),
            "n_points": self.n_points,
            "n_distinct_x": self.n_distinct_x,
            "residual_scale": np.asarray(self.residual_scale).tolist(),
            "seed": self.seed,
            "target": {"log": self.target.log, "scale": self.target.scale},
        }

    @classmethod
    def from_state(cls, law: Law, state: Mapping[str, Any]) -> Bootstrap:
        """The `Bootstrap` of ``law`` that `state` wrote (after a JSON round trip)."""
        return cls(
            law=law,
            params=_float_array(state["params"]),
            point=_float_array(state["point"]),
            converged=np.asarray(state["converged"], dtype=bool),
            n_points=int(state["n_points"]),
            n_distinct_x=int(state["n_distinct_x"]),
            residual_scale=_float_array(state["residual_scale"]),
            seed=int(state["seed"]),
            target=Target(log=bool(state["target"]["log"]), scale=float(state["target"]["scale"])),
        )

    def to_dict(self, level: float = 0.9) -> dict[str, Any]:
        """JSON-ready summary of a single data set's bootstrap."""
        return {
            "n_resamples": self.n_boot,
            "level": level,
            "seed": self.seed,
            "objective": self.target.describe(),
            "non_converged_fraction": float(1.0 - np.mean(self.converged)),
            "param_intervals": {p: list(v) for p, v in self.param_intervals(level).items()},
            "at_bound_fraction": self.at_bound_fraction(),
        }


def bootstrap_law(
    x: ArrayLike,
    y: ArrayLike,
    *,
    law: str | Law = "power_law_D",
    n_boot: int = 1000,
    huber_delta: float = 1e-3,
    seed: int = 0,
    start: ArrayLike | None = None,
    groups: ArrayLike | None = None,
    max_iter: int = 300,
    target: str | Target = "auto",
) -> Bootstrap:
    """Refit ``law`` to ``n_boot`` resamples of the cells, all at once.

    Parameters
    ----------
    x : array_like
        The law's variables, ``(n,)`` or ``(n, k)``.
    y : array_like
        The metric, ``(n,)``, or ``(S, n)`` for ``S`` data sets on the same design
        (a simulation study), each resampled independently. May be zero or negative
        for a user law (see ``target``).
    law : str or Law
    n_boot : int
        Resamples; at least 1000 for reported intervals.
    huber_delta : float
        As in `analysis.fit.fit_law`.
    seed : int
        Seed of the resampling; results are reproducible for a seed.
    start : array_like, optional
        The full-data parameter vector ``(p,)`` (or ``(S, p)``), e.g.
        ``fit_law(...).theta``; fitted here when omitted.
    groups : array_like, optional
        ``(n,)`` labels: resample whole groups (e.g. all seeds of a cell) instead
        of rows.
    max_iter : int
        Iteration cap of the batched refinement.
    target : {"auto", "log", "linear"} or Target
        Residuals as in `analysis.fit.fit_law`; pass the fit's ``FitResult.target`` so
        both use the same scale. A string is resolved on all of ``y`` (every data set).

    Returns
    -------
    Bootstrap
    """
    law = get_law(law)
    xd = law.design(x)
    yv = np.asarray(y, dtype=float)
    single = yv.ndim == 1
    y2 = yv[None, :] if single else yv  # (S, n)
    n = xd.shape[0]
    if y2.ndim != 2 or y2.shape[1] != n:
        raise AnalysisError(f"x has {n} rows but y has shape {yv.shape}")
    if not (np.all(np.isfinite(xd)) and np.all(xd > 0) and np.all(np.isfinite(y2))):
        raise AnalysisError(f"law {law.name!r}: x must be finite and positive, y finite")
    tgt = resolve_target(law, y2, target)
    if n_boot < 1:
        raise AnalysisError(f"n_boot must be >= 1; got {n_boot}")
    n_sets = y2.shape[0]

    order = _canonical_order(xd, groups)
    xd, y2 = xd[order], y2[:, order]
    g = np.zeros(n, dtype=int) if groups is None else np.asarray(groups)[order]
    _, x_id = np.unique(xd, axis=0, return_inverse=True)
    x_id = np.ravel(x_id)
    if groups is None:  # rows sharing x: order each data set's values, the design is unchanged
        y2 = np.take_along_axis(y2, np.lexsort((y2, np.broadcast_to(x_id, y2.shape))), axis=1)
    n_distinct = int(x_id.max()) + 1
    if n_distinct < 2:
        raise AnalysisError(f"cannot bootstrap {law.name!r} on {n_distinct} distinct x value(s)")

    rng = np.random.default_rng(seed)
    counts = np.stack(
        [
            _resample_counts(rng, x_id, g, groups is not None, n_boot, law.n_params)
            for _ in range(n_sets)
        ]
    )  # (S, B, n)
    log_y = tgt.transform(y2)  # (S, n): log y for the log target
    solve_opts = {"delta": huber_delta, "max_iter": max_iter, "target": tgt}

    if start is None:
        ones = np.ones((n_sets, n))
        u0 = best_starts(law, xd, y2, ones, n_grid=64, max_points=4096, n_random=512, target=tgt)
        point_u = refine(law, xd, log_y, ones, u0, **solve_opts).u
        point = law.to_theta(point_u)
    else:
        lo_b, hi_b = law.to_theta(law.u_bounds())
        theta0 = np.broadcast_to(np.asarray(start, dtype=float), (n_sets, law.n_params))
        point = np.clip(theta0, lo_b, hi_b)  # kept exactly: intervals centre on this fit
        point_u = np.clip(law.to_u(point), *law.u_bounds())

    y_rep = np.repeat(y2, n_boot, axis=0)  # (S*B, n)
    w = counts.reshape(n_sets * n_boot, n).astype(float)
    log_y_rep = tgt.transform(y_rep)
    if n_distinct < law.n_params:
        # Underdetermined: every point of a ridge fits exactly, so resamples would all
        # return the point estimate and a zero-width interval. Draw each resample's start
        # at random on the ridge instead: the spread is that of the curves the data allow.
        ridge_u = best_starts(
            law,
            xd,
            y_rep,
            w,
            n_grid=BOOT_GRID,
            max_points=BOOT_MAX_GRID_POINTS,
            rng=rng,
            target=tgt,
        )
        fits = refine(law, xd, log_y_rep, w, ridge_u, **solve_opts)
        u, conv = fits.u, fits.converged
    else:
        grid_u = best_starts(
            law,
            xd,
            y_rep,
            w,
            n_grid=BOOT_GRID,
            max_points=BOOT_MAX_GRID_POINTS,
            n_random=256,
            target=tgt,
        )
        point_rep = np.repeat(point_u, n_boot, axis=0)
        fits = refine(law, xd, log_y_rep, w, point_rep, **solve_opts)
        u, conv, loss = fits.u, fits.converged, fits.loss
        # A grid start is refined too where it already beats the refined point start by a
        # margin: the resample's optimum may sit in another basin.
        grid_loss = objective(law, xd, log_y_rep, w, grid_u, huber_delta, tgt)
        alt = np.flatnonzero(grid_loss < 1.5 * loss)
        if alt.size:
            more = refine(law, xd, log_y_rep[alt], w[alt], grid_u[alt], **solve_opts)
            better = more.loss < loss[alt]
            u[alt[better]] = more.u[better]
            conv[alt[better]] = more.converged[better]

    return _result(law, tgt, u, conv, point, xd, log_y, n_sets, n_boot, single, n_distinct, seed)


def resolve_target(law: Law, y: ArrayLike, target: str | Target) -> Target:
    """The `Target` of a fit: ``"auto"`` takes log residuals for a positive ``y`` and
    linear ones (`analysis.solve.linear_target`) otherwise.

    Raises
    ------
    AnalysisError
        For an unknown setting, a log target on a ``y`` that is not positive, or a
        built-in (separable) law on such a ``y``: those laws model positive metrics.
    """
    yv = np.asarray(y, dtype=float)
    positive = bool(np.all(yv > 0))
    if law.separable and not positive:
        raise AnalysisError(
            f"law {law.name!r} models a positive metric (bits per byte) but y has values "
            "<= 0; use a user law (analysis.laws.user_law) for such a metric"
        )
    if isinstance(target, Target):
        if target.log and not positive:
            raise AnalysisError("the log target needs y > 0; use target='linear'")
        return target
    if target == "log" or (target == "auto" and positive):
        if not positive:
            raise AnalysisError("target='log' needs y > 0; use target='linear' or 'auto'")
        return LOG_TARGET
    if target in ("linear", "auto"):
        return linear_target(yv)
    raise AnalysisError(f"target must be 'auto', 'log' or 'linear'; got {target!r}")


def _result(
    law: Law,
    target: Target,
    u: np.ndarray,
    conv: np.ndarray,
    point: np.ndarray,
    xd: np.ndarray,
    t: np.ndarray,
    n_sets: int,
    n_boot: int,
    single: bool,
    n_distinct: int,
    seed: int,
) -> Bootstrap:
    n = xd.shape[0]
    pred = law.evaluate(xd, point)  # (S, n)
    dof = n - law.n_params
    if dof > 0:
        rms = np.sqrt(np.sum((target.of_prediction(pred) - t) ** 2, axis=-1) / dof)
    else:
        rms = np.full(n_sets, np.nan)
    params = law.to_theta(u).reshape(n_sets, n_boot, law.n_params)
    conv = conv.reshape(n_sets, n_boot)
    if single:
        params, conv, point, rms = params[0], conv[0], point[0], rms[0]
    return Bootstrap(
        law=law,
        params=params,
        point=point,
        converged=conv,
        n_points=n,
        n_distinct_x=n_distinct,
        residual_scale=np.asarray(rms),
        seed=seed,
        target=target,
    )


def _canonical_order(xd: np.ndarray, groups: ArrayLike | None) -> np.ndarray:
    """Rows sorted by x (then group): resampling indexes rows in this order."""
    keys = [xd[:, j] for j in range(xd.shape[1])[::-1]]
    if groups is not None:
        _, g_rank = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        keys = [np.ravel(g_rank), *keys]
    return np.lexsort(keys)


def _resample_counts(
    rng: np.random.Generator,
    x_id: np.ndarray,
    groups: np.ndarray,
    by_group: bool,
    n_boot: int,
    n_params: int,
) -> np.ndarray:
    """``(B, n)`` resampling counts; degenerate resamples are drawn again."""
    n = len(x_id)
    n_distinct = int(x_id.max()) + 1
    need = min(n_params, n_distinct)
    if by_group:
        _, g_id = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        g_id = np.ravel(g_id)
        n_groups = int(g_id.max()) + 1
    onehot = np.zeros((n, n_distinct))
    onehot[np.arange(n), x_id] = 1.0

    def draw(k: int) -> np.ndarray:
        if by_group:
            picks = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=k)
            return picks[:, g_id]  # every row of a group gets the group's count
        return rng.multinomial(n, np.full(n, 1.0 / n), size=k)

    counts = draw(n_boot)
    for _ in range(_REDRAWS):
        bad = np.flatnonzero(((counts @ onehot) > 0).sum(-1) < need)
        if bad.size == 0:
            break
        counts[bad] = draw(bad.size)
    return counts


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars made plain and non-finite floats as strings
    (``"nan"``, ``"inf"``, ``"-inf"``), so that strict JSON holds it; see `from_json_float`."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else str(v)
    return value


def from_json_float(value: Any) -> float:
    """A float written by `json_ready` (a number, or ``"nan"``/``"inf"``/``"-inf"``)."""
    return float(value)


def _float_array(value: Any) -> np.ndarray:
    if isinstance(value, list):
        return np.array([_float_array(v) for v in value], dtype=float)
    return np.asarray(from_json_float(value))


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise AnalysisError(f"interval level must lie in (0, 1); got {level}")


def percentile_interval(draws: np.ndarray, level: float, axis: int = -1) -> tuple[Any, Any]:
    """``(lower, upper)`` percentiles of ``draws`` along ``axis`` for a central ``level``."""
    _check_level(level)
    lo, hi = np.quantile(draws, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=axis)
    return lo, hi
