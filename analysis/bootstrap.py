"""Bootstrap over cells: a thousand refits of a law at once, for honest intervals.

Each resample draws the cells (rows) with replacement; a resample is a vector of
counts used as weights, so all resamples share one design and are fitted
together by the batched solver (`analysis.solve`): screen the nonlinear
parameters on a grid for every resample, start also from the full-data optimum,
refine both by a batched Levenberg-Marquardt on the same Huber-on-log objective
as `analysis.fit.fit_law`, keep the better. Resamples that see fewer distinct x
values than the law has parameters (or than the data has, if fewer) are drawn
again: such a resample cannot determine the curve, and keeping it would report
the bounds rather than the data.

Rows are put in a canonical order before resampling, so the result does not
depend on the order of the input rows.

References
----------
.. [1] Efron and Tibshirani 1993, "An Introduction to the Bootstrap", ch. 9
   (bootstrapping pairs in regression) and ch. 13 (percentile intervals).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.laws import Law, get_law
from annealscale.analysis.solve import best_starts, log_bounds, objective, refine

BOOT_GRID = 16
"""Grid points per nonlinear parameter when screening resamples (the full-data optimum
is a second start, so the grid is a safety net, not the search)."""
BOOT_MAX_GRID_POINTS = 512
_REDRAWS = 20


@dataclass(frozen=True, kw_only=True)
class Bootstrap:
    """Bootstrap refits of one law: ``params (..., B, p)``, leading axes for stacked data sets."""

    law: Law
    params: np.ndarray
    """(..., B, p) fitted parameters of each resample."""
    point: np.ndarray
    """(..., p) parameters fitted to all the cells."""
    converged: np.ndarray
    """(..., B) whether each refit met its tolerance."""
    n_points: int
    n_distinct_x: int
    log_residual_scale: np.ndarray
    """(...) root mean square log residual of the full fit with ``n - p`` degrees of freedom."""
    seed: int

    @property
    def n_boot(self) -> int:
        return int(self.params.shape[-2])

    def draws(self, x: ArrayLike) -> np.ndarray:
        """The fitted curve of every resample at ``x``: ``(..., B, n)``."""
        return self.law.evaluate(self.law.design(x), self.params)

    def interval(self, x: ArrayLike, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of the fitted curve at ``x``: ``(lower, upper)``, each ``(..., n)``."""
        _check_level(level)
        d = self.draws(x)
        q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
        lo, hi = np.quantile(d, q, axis=-2)
        return lo, hi

    def observation_draws(
        self, x: ArrayLike, *, n_seeds: int = 1, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Draws of a new observation (mean of ``n_seeds`` seeds) at ``x``: ``(..., B, n)``.

        The curve draws times ``exp(sigma * z / sqrt(n_seeds))``, ``z`` standard
        normal and ``sigma`` the log residual scale of the full fit.
        """
        rng = rng or np.random.default_rng(self.seed + 1)
        d = self.draws(x)
        sigma = np.nan_to_num(np.asarray(self.log_residual_scale, dtype=float), nan=0.0)
        z = rng.standard_normal(d.shape)
        return d * np.exp(sigma[..., None, None] * z / math.sqrt(max(n_seeds, 1)))

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
        lo, hi = log_bounds(self.law)
        u = np.log(self.params)
        on = (u - lo < 1e-3) | (hi - u < 1e-3)  # (..., B, p)
        frac = on.mean(axis=-2)
        return {p: float(np.mean(frac[..., j])) for j, p in enumerate(self.law.param_names)}

    def to_dict(self, level: float = 0.9) -> dict[str, Any]:
        """JSON-ready summary of a single data set's bootstrap."""
        return {
            "n_resamples": self.n_boot,
            "level": level,
            "seed": self.seed,
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
) -> Bootstrap:
    """Refit ``law`` to ``n_boot`` resamples of the cells, all at once.

    Parameters
    ----------
    x : array_like
        The law's variables, ``(n,)`` or ``(n, k)``.
    y : array_like
        The metric, ``(n,)``, or ``(S, n)`` for ``S`` data sets on the same design
        (a simulation study), each resampled independently.
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
    if not (np.all(np.isfinite(xd)) and np.all(xd > 0) and np.all(np.isfinite(y2) & (y2 > 0))):
        raise AnalysisError(f"law {law.name!r}: x and y must be finite and positive")
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
    log_y = np.log(y2)  # (S, n)

    if start is None:
        ones = np.ones((n_sets, n))
        u0 = best_starts(law, xd, y2, ones, n_grid=64, max_points=4096, n_random=512)
        point_u = refine(law, xd, log_y, ones, u0, delta=huber_delta, max_iter=max_iter).u
    else:
        lo, hi = log_bounds(law)
        theta0 = np.broadcast_to(np.asarray(start, dtype=float), (n_sets, law.n_params))
        point_u = np.clip(np.log(np.maximum(theta0, np.finfo(float).tiny)), lo, hi)

    y_rep = np.repeat(y2, n_boot, axis=0)  # (S*B, n)
    w = counts.reshape(n_sets * n_boot, n).astype(float)
    log_y_rep = np.log(y_rep)
    if n_distinct < law.n_params:
        # Underdetermined: every point of a ridge fits exactly, so resamples would all
        # return the point estimate and a zero-width interval. Draw each resample's start
        # at random on the ridge instead: the spread is that of the curves the data allow.
        ridge_u = best_starts(
            law, xd, y_rep, w, n_grid=BOOT_GRID, max_points=BOOT_MAX_GRID_POINTS, rng=rng
        )
        fits = refine(law, xd, log_y_rep, w, ridge_u, delta=huber_delta, max_iter=max_iter)
        return _result(
            law,
            fits.u,
            fits.converged,
            point_u,
            xd,
            log_y,
            n_sets,
            n_boot,
            single,
            n_distinct,
            seed,
        )
    grid_u = best_starts(
        law, xd, y_rep, w, n_grid=BOOT_GRID, max_points=BOOT_MAX_GRID_POINTS, n_random=256
    )
    point_rep = np.repeat(point_u, n_boot, axis=0)
    fits = refine(law, xd, log_y_rep, w, point_rep, delta=huber_delta, max_iter=max_iter)
    u, conv, loss = fits.u, fits.converged, fits.loss
    # A grid start is refined too where it already beats the refined point start by a
    # margin: the resample's optimum may sit in another basin.
    grid_loss = objective(law, xd, log_y_rep, w, grid_u, huber_delta)
    alt = np.flatnonzero(grid_loss < 1.5 * loss)
    if alt.size:
        more = refine(
            law, xd, log_y_rep[alt], w[alt], grid_u[alt], delta=huber_delta, max_iter=max_iter
        )
        better = more.loss < loss[alt]
        u[alt[better]] = more.u[better]
        conv[alt[better]] = more.converged[better]

    return _result(law, u, conv, point_u, xd, log_y, n_sets, n_boot, single, n_distinct, seed)


def _result(
    law: Law,
    u: np.ndarray,
    conv: np.ndarray,
    point_u: np.ndarray,
    xd: np.ndarray,
    log_y: np.ndarray,
    n_sets: int,
    n_boot: int,
    single: bool,
    n_distinct: int,
    seed: int,
) -> Bootstrap:
    n = xd.shape[0]
    pred = law.evaluate(xd, np.exp(point_u))  # (S, n)
    dof = n - law.n_params
    if dof > 0:
        rms = np.sqrt(np.sum((np.log(np.maximum(pred, 1e-300)) - log_y) ** 2, axis=-1) / dof)
    else:
        rms = np.full(n_sets, np.nan)
    params = np.exp(u).reshape(n_sets, n_boot, law.n_params)
    conv = conv.reshape(n_sets, n_boot)
    point = np.exp(point_u)
    if single:
        params, conv, point, rms = params[0], conv[0], point[0], rms[0]
    return Bootstrap(
        law=law,
        params=params,
        point=point,
        converged=conv,
        n_points=n,
        n_distinct_x=n_distinct,
        log_residual_scale=np.asarray(rms),
        seed=seed,
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


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise AnalysisError(f"interval level must lie in (0, 1); got {level}")


def percentile_interval(draws: np.ndarray, level: float, axis: int = -1) -> tuple[Any, Any]:
    """``(lower, upper)`` percentiles of ``draws`` along ``axis`` for a central ``level``."""
    _check_level(level)
    lo, hi = np.quantile(draws, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=axis)
    return lo, hi
