"""Batched numerics under the fitter and the bootstrap: many fits of one law at once.

A "problem" is one weighted data set: ``(t (n,), weights (n,))`` on a shared design
``x (n, k)``, where ``t`` is the metric as the objective sees it (`Target`: ``log y``
for a positive metric, ``y / scale`` otherwise). The bootstrap stacks a thousand of them (weights are the
resampling counts); a simulation study stacks data sets too. Everything here is
vectorised over the leading problem axis ``P``.

- `screen`: for each problem, the best point of a grid over the nonlinear
  parameters, the linear ones solved by non-negative least squares on relative
  residuals (variable projection), with the NNLS done exactly by enumerating
  active sets (at most three linear parameters, so at most seven subsets).
- `refine`: a projected Levenberg-Marquardt on the Huber loss of the residuals,
  in the law's fitting coordinates ``u`` (`analysis.laws.Law.to_u`: log-parameters
  for positive-bounded ones), with Huber handled by iteratively reweighted least
  squares and every step accepted only if it lowers the true objective.

Arrays named ``u`` hold fitting coordinates; for the built-in laws (all parameters
positive) they are the log-parameters.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from annealscale.analysis.laws import Law

MAX_GRID_POINTS = 4096
"""Cap on the screening grid: per-axis points shrink as ``MAX_GRID_POINTS ** (1/q)`` for
laws with ``q`` nonlinear parameters (64 per axis for two, 16 for three)."""
_TINY = np.finfo(float).tiny
_CHUNK_ELEMENTS = 2_000_000  # floats per temporary array when screening in chunks


def huber(r: ArrayLike, delta: float) -> np.ndarray:
    """Huber loss per residual: ``r**2 / 2`` inside ``|r| <= delta``, linear outside.

    ``delta = inf`` gives the squared loss ``r**2 / 2``.
    """
    a = np.abs(np.asarray(r, dtype=float))
    if math.isinf(delta):
        return 0.5 * a**2
    return np.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta))


def _huber_weight(r: np.ndarray, delta: float) -> np.ndarray:
    """``psi(r) / r``: 1 inside the threshold, ``delta / |r|`` outside."""
    if math.isinf(delta):
        return np.ones_like(r)
    return np.minimum(1.0, delta / np.maximum(np.abs(r), _TINY))


@dataclass(frozen=True)
class Target:
    """How the objective sees the metric: residuals of ``log y``, or of ``y / scale``.

    ``log=True`` (every built-in law, any positive metric): the residual of a point is
    ``log L - log y``, a relative error, as in Hoffmann et al. (2022). ``log=False`` (a
    metric that is zero or negative somewhere): ``(L - y) / scale``, with ``scale`` a
    typical magnitude of ``y`` (`linear_target`), so that the residual is again about
    a relative error and the Huber threshold keeps its meaning.
    """

    log: bool = True
    scale: float = 1.0
    """Metric units dividing linear residuals (1 and unused for the log target)."""

    def transform(self, y: ArrayLike) -> np.ndarray:
        """The metric as the residuals see it: ``log y`` or ``y / scale``."""
        y = np.asarray(y, dtype=float)
        return np.log(y) if self.log else y / self.scale

    def of_prediction(self, pred: np.ndarray) -> np.ndarray:
        """`transform` of a prediction (floored at the smallest float on the log scale)."""
        return np.log(np.maximum(pred, _TINY)) if self.log else pred / self.scale

    def jacobian(self, grad: np.ndarray, dtheta_du: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """``d residual / d u`` ``(..., n, p)`` from ``dL/dtheta (..., n, p)``,
        ``dtheta/du (..., p)`` and ``L (..., n)``."""
        if self.log:
            return grad * (dtheta_du[..., None, :] / np.maximum(pred, _TINY)[..., None])
        return grad * (dtheta_du[..., None, :] / self.scale)

    def describe(self) -> dict[str, object]:
        """JSON-ready description of the residuals."""
        if self.log:
            return {"residual": "log L - log y", "scale": None}
        return {"residual": "(L - y) / scale", "scale": self.scale}


LOG_TARGET = Target()
"""Residuals of ``log y``: the objective of every built-in law."""


def linear_target(y: ArrayLike) -> Target:
    """Residuals ``(L - y) / scale``, ``scale`` the median of ``|y|``.

    Why the median magnitude: for a metric of one sign and moderate spread
    ``(L - y) / median|y|`` is close to ``log L - log y``, so a Huber threshold chosen for
    log residuals (1e-3: a 0.1 % error) means about the same here. Where half the values
    are zero the scale falls back to 1.4826 times the median absolute deviation (the
    spread of ``y``), and to 1 where ``y`` is constant zero.
    """
    y = np.asarray(y, dtype=float)
    scale = float(np.median(np.abs(y)))
    if not scale > 0.0:
        scale = 1.4826 * float(np.median(np.abs(y - np.median(y))))
    return Target(log=False, scale=scale if scale > 0.0 else 1.0)


def log_bounds(law: Law) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the fitting coordinates ``u`` (`Law.u_bounds`): the log-bounds of a law
    whose parameters are all positive, as every built-in law's are."""
    return law.u_bounds()


def nonlinear_grid(law: Law, n_grid: int, max_points: int = MAX_GRID_POINTS) -> np.ndarray:
    """Grid over the nonlinear parameters, shape ``(g, q)``: geometric on a log-scale
    parameter, even on a linear-scale one."""
    q = len(law.nonlinear_params)
    per_axis = min(n_grid, max(3, int(round(max_points ** (1.0 / q)))))
    axes = [
        np.geomspace(*law.bounds[p], per_axis)
        if law.bounds[p][0] > 0
        else np.linspace(*law.bounds[p], per_axis)
        for p in law.nonlinear_params
    ]
    return np.array(list(itertools.product(*axes)))


def quasi_random_starts(law: Law, n: int) -> np.ndarray:
    """``n`` vectors of fitting coordinates spread over the bounds (Halton), ``(n, p)``."""
    from scipy.stats import qmc

    lo, hi = law.u_bounds()
    pts = qmc.Halton(d=law.n_params, scramble=False).random(n + 1)[1:]  # skip the corner
    return lo + pts * (hi - lo)


def objective(
    law: Law,
    xd: np.ndarray,
    t: np.ndarray,
    w: np.ndarray,
    u: np.ndarray,
    delta: float,
    target: Target = LOG_TARGET,
) -> np.ndarray:
    """Summed weighted Huber loss of the residuals, shape ``u.shape[:-1]``.

    ``t`` is ``target.transform(y)`` (``log y`` for the default log target).
    """
    r = target.of_prediction(law.evaluate(xd, law.to_theta(u))) - t  # (..., n)
    loss = huber(r, delta) * w
    return np.where(np.isfinite(loss), loss, np.inf).sum(axis=-1)


def batch_nnls(m: np.ndarray, v: np.ndarray, tt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact non-negative least squares from normal equations, for up to ~4 unknowns.

    Parameters
    ----------
    m : (..., k, k) Gram matrices ``A^T W A``.
    v : (..., k) ``A^T W t``.
    tt : (...) ``t^T W t``.

    Returns
    -------
    (..., k) solutions and (...) minimised objectives ``|| W^1/2 (A x - t) ||^2``.

    Notes
    -----
    The NNLS optimum is the unconstrained optimum on its set of free variables and
    is feasible; every other feasible subset solution is a feasible point, so the
    feasible subset solution of lowest objective is the optimum.
    """
    k = m.shape[-1]
    best_obj = tt.copy()
    best_x = np.zeros(v.shape)
    scale = np.maximum(np.einsum("...ii->...", m), _TINY)[..., None, None]
    for size in range(1, k + 1):
        for subset in itertools.combinations(range(k), size):
            s = list(subset)
            mss = m[..., s, :][..., :, s]
            mss = mss + 1e-13 * scale * np.eye(size)
            xs = np.linalg.solve(mss, v[..., s, None])[..., 0]  # (..., size)
            obj = tt - np.einsum("...i,...i->...", xs, v[..., s])
            ok = np.all(xs >= 0.0, axis=-1) & np.isfinite(obj) & (obj < best_obj)
            best_obj = np.where(ok, obj, best_obj)
            full = np.zeros(v.shape)
            full[..., s] = xs
            best_x = np.where(ok[..., None], full, best_x)
    return best_x, np.maximum(best_obj, 0.0)


@dataclass(frozen=True)
class Candidates:
    """Screened starting points: ``u (P, C, p)`` fitting coordinates, ``score (P, C)``."""

    u: np.ndarray
    score: np.ndarray


def screen(
    law: Law,
    xd: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    *,
    n_grid: int,
    offset_fractions: Sequence[float] = (),
    delta: float | None = None,
    n_random: int = 512,
    max_points: int = MAX_GRID_POINTS,
    target: Target = LOG_TARGET,
) -> Candidates:
    """Candidate starts for problems ``y (P, n)`` with weights ``w (P, n)``.

    Separable laws: every grid point of the nonlinear parameters, linear ones by
    NNLS with the offset free and with the offset fixed at each of
    ``offset_fractions * min(y)``. Function laws: ``n_random`` quasi-random starts.
    Scored by the Huber loss of ``target``'s residuals when ``delta`` is given, else by
    the relative least-squares objective of the NNLS (cheaper, for the bootstrap).
    Separable laws need a positive ``y``.
    """
    lo, hi = law.u_bounds()
    t = target.transform(y)
    if not law.separable:
        u = np.broadcast_to(
            quasi_random_starts(law, n_random), (y.shape[0], n_random, law.n_params)
        )
        d = 1e-3 if delta is None else delta
        pred = target.of_prediction(law.evaluate(xd, law.to_theta(u[0])))  # (C, n)
        r = pred[None, :, :] - t[:, None, :]  # (P, C, n)
        loss = huber(r, d) * w[:, None, :]
        score = np.where(np.isfinite(loss), loss, np.inf).sum(-1)  # (P, C)
        return Candidates(u=u, score=score)

    grid = nonlinear_grid(law, n_grid, max_points)  # (g, q)
    a = law.basis(xd, grid)  # (g, n, m)
    g, n, m = a.shape
    off = law.linear_params.index(law.offset_param)
    others = [j for j in range(m) if j != off]
    rel_w = w / y**2  # (P, n): relative residuals mimic the log-space objective
    gram = np.empty((y.shape[0], g, m, m))
    for i in range(m):
        for j in range(i, m):
            gram[:, :, i, j] = rel_w @ (a[:, :, i] * a[:, :, j]).T  # (P, g)
            gram[:, :, j, i] = gram[:, :, i, j]
    v = np.stack([(rel_w * y) @ a[:, :, i].T for i in range(m)], axis=-1)  # (P, g, m)
    tt = np.broadcast_to(w.sum(-1)[:, None], (y.shape[0], g))  # sum w (y/y)^2

    lins, scores = [], []
    lin, obj = batch_nnls(gram, v, tt)  # (P, g, m)
    lins.append(lin)
    scores.append(obj)
    y_min = np.where(w > 0, y, np.inf).min(-1)  # (P,)
    for frac in offset_fractions:
        e = frac * y_min[:, None]  # (P, 1)
        t_sum = (rel_w * (y - e) ** 2).sum(-1)[:, None]  # (P, 1)
        v_o = v[..., others] - e[..., None] * gram[..., others, off]
        sub = gram[..., others, :][..., :, others]
        lin_o, obj = batch_nnls(sub, v_o, np.broadcast_to(t_sum, (y.shape[0], g)))
        full = np.empty((y.shape[0], g, m))
        full[..., off] = e
        full[..., others] = lin_o
        lins.append(full)
        scores.append(obj)
    lin_all = np.concatenate(lins, axis=1)  # (P, C, m)
    nonlin_all = np.tile(grid, (len(lins), 1))  # (C, q)
    theta = np.concatenate(
        [lin_all, np.broadcast_to(nonlin_all, (*lin_all.shape[:2], grid.shape[1]))], axis=-1
    )
    u = np.clip(law.to_u(theta), lo, hi)  # (P, C, p)
    if delta is None:
        return Candidates(u=u, score=np.concatenate(scores, axis=1))
    return Candidates(u=u, score=_chunked_objective(law, xd, t, w, u, delta, target))


def _chunked_objective(
    law: Law,
    xd: np.ndarray,
    t: np.ndarray,
    w: np.ndarray,
    u: np.ndarray,
    delta: float,
    target: Target,
) -> np.ndarray:
    p_count, c_count, _ = u.shape
    n = xd.shape[0]
    step = max(1, _CHUNK_ELEMENTS // max(1, c_count * n))
    out = np.empty((p_count, c_count))
    for s in range(0, p_count, step):
        sl = slice(s, s + step)
        out[sl] = objective(law, xd, t[sl, None, :], w[sl, None, :], u[sl], delta, target)
    return out


def best_starts(
    law: Law,
    xd: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    *,
    n_grid: int,
    max_points: int,
    n_random: int = 256,
    rng: np.random.Generator | None = None,
    target: Target = LOG_TARGET,
) -> np.ndarray:
    """The single best screened start of each problem, ``(P, p)``, screened in chunks.

    With ``rng``, a start drawn at random among the candidates that fit as well as the
    best (to 1e-4 RMS relative residual): for an underdetermined problem, a random point
    of the ridge of exact fits instead of an arbitrary one.
    """
    p_count = y.shape[0]
    n_cand = len(nonlinear_grid(law, n_grid, max_points)) if law.separable else n_random
    step = max(1, _CHUNK_ELEMENTS // max(1, n_cand * max(xd.shape[0], 8)))
    out = np.empty((p_count, law.n_params))
    for s in range(0, p_count, step):
        sl = slice(s, s + step)
        cand = screen(
            law,
            xd,
            y[sl],
            w[sl],
            n_grid=n_grid,
            n_random=n_random,
            max_points=max_points,
            target=target,
        )
        if rng is None:
            best = np.argmin(cand.score, axis=1)  # (chunk,)
        else:
            limit = cand.score.min(axis=1, keepdims=True) + 1e-8 * w[sl].sum(-1, keepdims=True)
            best = np.argmax(np.where(cand.score <= limit, rng.random(cand.score.shape), -1.0), 1)
        out[sl] = np.take_along_axis(cand.u, best[:, None, None], axis=1)[:, 0]
    return out


@dataclass(frozen=True)
class Refined:
    u: np.ndarray
    """(P, p) fitting coordinates (log-parameters for positive-bounded ones)."""
    loss: np.ndarray
    """(P,) summed weighted Huber loss of the residuals."""
    converged: np.ndarray
    """(P,) bool: the relative decrease of the loss or the step fell below tolerance."""
    iterations: int


def refine(
    law: Law,
    xd: np.ndarray,
    log_y: np.ndarray,
    w: np.ndarray,
    u0: np.ndarray,
    *,
    delta: float,
    max_iter: int = 300,
    tol: float = 1e-9,
    prior_mean: np.ndarray | None = None,
    prior_precision: np.ndarray | None = None,
    target: Target = LOG_TARGET,
) -> Refined:
    """Projected Levenberg-Marquardt on ``sum w huber(r)``, batched, where ``r`` is
    ``log L(x; theta(u)) - log y`` (the default log ``target``) or ``(L - y) / scale``.

    Parameters
    ----------
    log_y, w : (P, n)
        ``target.transform(y)`` (``log y`` for the log target) and weights.
    u0 : (P, p) starting fitting coordinates (`Law.to_u`), inside `Law.u_bounds`.
    prior_mean, prior_precision : (p,), optional
        A Gaussian penalty ``sum prior_precision * (u - prior_mean)**2 / 2`` added to the
        objective (a prior on the fitting coordinates, in the loss's units; precision 0
        leaves a parameter free). ``Refined.loss`` includes it.
    target : Target
        How residuals are taken; see `Target`.

    Notes
    -----
    The Huber loss enters by iteratively reweighted least squares (weights
    ``psi(r)/r``); near-L1 problems (residuals well beyond ``delta``) converge
    linearly, hence the generous ``max_iter``. Problems leave the working set as
    they converge, so the tail costs little.
    """
    lo, hi = law.u_bounds()
    p_count, p = u0.shape
    m0 = np.zeros(p) if prior_mean is None else np.asarray(prior_mean, float)
    prec = np.zeros(p) if prior_precision is None else np.asarray(prior_precision, float)

    def penalised(lya, wa, u):
        loss = objective(law, xd, lya, wa, u, delta, target)
        return loss + 0.5 * ((u - m0) ** 2 * prec).sum(-1)

    u_out = np.clip(u0, lo, hi).astype(float)
    f_out = penalised(log_y, w, u_out)
    conv_out = np.zeros(p_count, dtype=bool)
    eye = np.eye(p)
    # working set: the problems still iterating
    idx = np.arange(p_count)
    ua, fa, lya, wa = u_out.copy(), f_out.copy(), log_y, w
    lam = np.full(p_count, 1e-3)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - reported
        if idx.size == 0:
            break
        theta = law.to_theta(ua)
        pred, grad = law.evaluate_with_grad(xd, theta)  # (a, n), (a, n, p)
        r = target.of_prediction(pred) - lya
        jac = target.jacobian(grad, law.dtheta_du(theta), pred)  # d r / d u, (a, n, p)
        om = wa * _huber_weight(r, delta)  # (a, n)
        jac_w = jac * om[..., None]
        h = np.matmul(jac_w.transpose(0, 2, 1), jac) + np.diag(prec)  # (a, p, p)
        g = np.matmul((om * r)[:, None, :], jac)[:, 0] + prec * (ua - m0)  # (a, p)
        pinned = ((ua <= lo + 1e-12) & (g > 0)) | ((ua >= hi - 1e-12) & (g < 0))
        free = ~pinned
        h = h * (free[:, :, None] & free[:, None, :]) + eye * pinned[:, :, None]
        g = np.where(free, g, 0.0)
        diag = np.einsum("app->ap", h)
        ridge = lam[:, None] * diag + 1e-12 * (diag.max(-1, keepdims=True) + _TINY)
        step = -np.linalg.solve(h + ridge[:, :, None] * eye, g[..., None])[..., 0]
        step = np.where(np.isfinite(step), step, 0.0)
        u_new = np.clip(ua + step, lo, hi)
        f_new = penalised(lya, wa, u_new)
        accept = f_new < fa
        moved = np.max(np.abs(u_new - ua), axis=-1)
        small_gain = (fa - f_new) <= tol * np.maximum(fa, _TINY)
        ua = np.where(accept[:, None], u_new, ua)
        fa = np.where(accept, f_new, fa)
        lam = np.where(accept, np.maximum(lam / 3.0, 1e-12), lam * 4.0)
        finished = (accept & small_gain) | (moved <= 1e-12) | (fa <= 0.0)
        gave_up = lam > 1e10
        stop = finished | gave_up
        if stop.any() or it == max_iter:
            out = idx[stop] if it < max_iter else idx
            sel = stop if it < max_iter else np.ones_like(stop)
            u_out[out], f_out[out] = ua[sel], fa[sel]
            small_grad = np.abs(g[sel]).max(-1) <= 1e-8 * (1.0 + fa[sel])
            conv_out[out] = finished[sel] | (gave_up[sel] & small_grad)
            keep = ~stop
            idx, ua, fa, lam = idx[keep], ua[keep], fa[keep], lam[keep]
            lya, wa = lya[keep], wa[keep]
    return Refined(u=u_out, loss=f_out, converged=conv_out, iterations=it)
