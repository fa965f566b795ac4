"""Step 2 of a two-step law: a bounded, fitted link from a task's loss to its accuracy.

Accuracy is bounded and jumps, so it is not extrapolated with a power law; the task's
loss (bits per byte of the correct continuation) is, and a sigmoid maps loss to accuracy
(the practice of Llama 3's and OLMo 2's ladders):

    acc = floor + (ceiling - floor) * sigmoid(-(loss - mid) / scale)

``floor`` is the chance level (given, e.g. one over the choice count, or fitted within
``[0, lowest observed accuracy]``), ``ceiling <= 1``. The link is one per task, shared by
every source, and fitted to all the task's cells by weighted least squares with binomial
weights (``p (1 - p) / n``, ``n`` the questions behind each cell, read from the metric's
stderr), reweighted once at the fitted accuracies. Its uncertainty is a bootstrap over
cells; scatter of the cells about the link beyond the binomial noise (sources that do
not share the link exactly) is kept as ``extra_sd`` and added to every draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares

from annealscale.analysis.errors import AnalysisError

PARAMS = ("floor", "ceiling", "mid", "scale")
MIN_CELLS = 4
"""Cells (distinct losses) a link needs: three parameters with the floor given, four without."""
_MIN_P = 0.02  # binomial variance is floored at this accuracy's, so a 0 or 1 cell keeps weight


def sigmoid_link(loss: ArrayLike, theta: ArrayLike) -> np.ndarray:
    """Accuracy at ``loss`` for parameters ``theta`` = (floor, ceiling, mid, scale).

    ``theta`` is ``(4,)`` or ``(B, 4)``; with ``(B, 4)``, ``loss`` is ``(B, n)`` or ``(n,)``
    and the result ``(B, n)``.
    """
    th = np.asarray(theta, dtype=float)
    x = np.asarray(loss, dtype=float)
    if th.ndim == 2:
        floor, ceiling, mid, scale = (th[:, i, None] for i in range(4))
    else:
        floor, ceiling, mid, scale = th
    z = np.clip(-(x - mid) / scale, -60.0, 60.0)
    return floor + (ceiling - floor) / (1.0 + np.exp(-z))


@dataclass(frozen=True, kw_only=True)
class LinkFit:
    """The fitted link of one task, with its bootstrap."""

    theta: tuple[float, float, float, float]
    """(floor, ceiling, mid, scale) of the point fit."""
    draws: np.ndarray
    """Bootstrap parameter draws ``(B, 4)`` (the point fit alone when ``n_boot`` was 0)."""
    floor_fixed: bool
    """Whether the floor was given (chance) rather than fitted."""
    n_cells: int
    questions: float | None
    """Median questions per cell (from the stderr); None when unknown."""
    extra_sd: float
    """Spread (accuracy units) of the cells about the link beyond binomial noise."""
    loss_range: tuple[float, float]
    """Observed task losses (min, max): beyond them the link extrapolates."""
    chi2_dof: float | None
    """Weighted residual sum of squares per degree of freedom (about 1: binomial noise
    explains the scatter); None without question counts."""

    @property
    def floor(self) -> float:
        return self.theta[0]

    @property
    def ceiling(self) -> float:
        return self.theta[1]

    def predict(self, loss: ArrayLike) -> np.ndarray:
        """Point accuracy at ``loss`` (within ``[floor, ceiling]``)."""
        return np.asarray(sigmoid_link(loss, self.theta))

    def draw_values(self, loss_draws: np.ndarray, seed: int = 0) -> np.ndarray:
        """Draws ``(B, n)`` of the expected accuracy from draws ``(B, n)`` of the loss: row
        ``b`` uses link draw ``b`` (cycled), plus the extra-binomial spread, kept within
        that draw's ``[floor, ceiling]``."""
        loss_draws = np.atleast_2d(np.asarray(loss_draws, dtype=float))
        b = loss_draws.shape[0]
        th = self.draws[np.arange(b) % len(self.draws)]
        acc = sigmoid_link(loss_draws, th)
        if self.extra_sd > 0:
            z = np.random.default_rng(seed).standard_normal(b)[:, None]
            acc = np.clip(acc + self.extra_sd * z, th[:, 0, None], th[:, 1, None])
        return acc

    def observation_sd(self, accuracy: ArrayLike) -> np.ndarray:
        """Binomial sd of one measured score of ``questions`` questions (0 when unknown)."""
        p = np.clip(np.asarray(accuracy, dtype=float), 0.0, 1.0)
        if not self.questions:
            return np.zeros(p.shape)
        return np.sqrt(p * (1.0 - p) / self.questions)

    def to_dict(self, level: float = 0.9) -> dict[str, Any]:
        q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
        lo, hi = np.quantile(self.draws, q, axis=0)
        return {
            "formula": "floor + (ceiling - floor) * sigmoid(-(loss - mid) / scale)",
            "params": dict(zip(PARAMS, self.theta, strict=True)),
            "param_intervals": {
                p: [float(a), float(b)] for p, a, b in zip(PARAMS, lo, hi, strict=True)
            },
            "floor_fixed": self.floor_fixed,
            "n_cells": self.n_cells,
            "n_boot": len(self.draws),
            "questions_per_cell": self.questions,
            "extra_sd": self.extra_sd,
            "chi2_per_dof": self.chi2_dof,
            "loss_range": list(self.loss_range),
            "fit": "weighted least squares, binomial weights p(1-p)/n reweighted at the fit; "
            "bootstrap over cells",
        }


def questions_from_stderr(accuracy: ArrayLike, stderr: ArrayLike) -> np.ndarray:
    """Questions behind each score from its binomial stderr, ``sqrt(p (1 - p) / (n - 1))``
    (lm-eval's); NaN where the stderr says nothing (0, NaN, or a score of 0 or 1)."""
    p = np.asarray(accuracy, dtype=float)
    se = np.asarray(stderr, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = p * (1.0 - p) / se**2 + 1.0
    return np.where(np.isfinite(n) & (se > 0) & (p > 0) & (p < 1), n, np.nan)


def fit_link(
    loss: ArrayLike,
    accuracy: ArrayLike,
    *,
    questions: ArrayLike | float | None = None,
    chance: float | None = None,
    n_boot: int = 0,
    seed: int = 0,
) -> LinkFit:
    """Fit the sigmoid link to cells ``(loss, accuracy)``.

    ``questions``: questions per cell (array or one number) for the binomial weights; None
    weighs cells equally. ``chance``: the floor, e.g. ``1 / choices``; None fits it within
    ``[0, lowest observed accuracy]``.

    Raises
    ------
    AnalysisError
        With fewer than `MIN_CELLS` distinct losses, accuracies outside ``[0, 1]`` or a
        chance level outside ``[0, 1)``.
    """
    x = np.asarray(loss, dtype=float)
    y = np.asarray(accuracy, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    n_q = None
    if questions is not None:
        n_q = np.broadcast_to(np.asarray(questions, dtype=float), x.shape)
        n_q = np.where(np.isfinite(n_q) & (n_q > 0), n_q, np.nan)
        if np.isnan(n_q[ok]).all():
            n_q = None
        else:  # a cell without a count gets the median count
            n_q = np.where(np.isnan(n_q), np.nanmedian(n_q[ok]), n_q)
    x, y = x[ok], y[ok]
    n_q = None if n_q is None else n_q[ok]
    if np.any((y < 0) | (y > 1)):
        raise AnalysisError("task accuracy must lie in [0, 1]; found values outside it")
    if chance is not None and not 0.0 <= chance < 1.0:
        raise AnalysisError(f"chance (--chance) must lie in [0, 1), e.g. 0.25; got {chance}")
    if len(np.unique(x)) < MIN_CELLS:
        raise AnalysisError(
            f"the link from task loss to accuracy needs at least {MIN_CELLS} cells with "
            f"distinct losses; the table has {len(np.unique(x))}"
        )
    theta = _fit(x, y, n_q, chance, start=None)
    draws = theta[None, :]
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(len(x), np.full(len(x), 1.0 / len(x)), size=n_boot)
        draws = _refit_resamples(x, y, n_q, chance, theta, counts.astype(float))
    pred = sigmoid_link(x, theta)
    resid = y - pred
    k = 3 if chance is not None else 4
    dof = max(len(x) - k, 1)
    extra_sd, chi2 = 0.0, None
    if n_q is not None:
        binvar = np.maximum(pred * (1 - pred), _MIN_P * (1 - _MIN_P)) / n_q
        extra_sd = math.sqrt(max(float(np.sum(resid**2)) / dof - float(np.mean(binvar)), 0.0))
        chi2 = float(np.sum(resid**2 / binvar)) / dof
    return LinkFit(
        theta=tuple(float(v) for v in theta),  # type: ignore[arg-type]
        draws=draws,
        floor_fixed=chance is not None,
        n_cells=len(x),
        questions=None if n_q is None else float(np.median(n_q)),
        extra_sd=extra_sd,
        loss_range=(float(x.min()), float(x.max())),
        chi2_dof=chi2,
    )


def _fit(
    x: np.ndarray,
    y: np.ndarray,
    n_q: np.ndarray | None,
    chance: float | None,
    start: np.ndarray | None,
) -> np.ndarray:
    """Point fit ``(floor, ceiling, mid, scale)``: bounded least squares, binomial weights
    reweighted once at the fit; several starts unless ``start`` is given."""
    span = max(float(x.max() - x.min()), 1e-3)
    floor_hi = max(float(y.min()), 1e-3)

    def unpack(v: np.ndarray) -> np.ndarray:
        f = chance if chance is not None else v[0]
        u, mid, log_s = v[-3:]
        return np.array([f, f + (1.0 - f) * u, mid, math.exp(log_s)])

    lo = [0.0, 1e-3, float(x.min()) - 3 * span, math.log(span / 50)]
    hi = [floor_hi, 1.0, float(x.max()) + 3 * span, math.log(span * 20)]
    if chance is not None:
        lo, hi = lo[1:], hi[1:]

    def pack(th: np.ndarray) -> np.ndarray:
        f, c, mid, s = th
        u = (c - f) / (1.0 - f) if f < 1 else 1.0
        v = [f, u, mid, math.log(s)] if chance is None else [u, mid, math.log(s)]
        return np.clip(v, np.array(lo) + 1e-9, np.array(hi) - 1e-9)

    def jac(v: np.ndarray, sd: np.ndarray) -> np.ndarray:
        f, _, mid, s = unpack(v)
        u = v[-3]
        sig = 1.0 / (1.0 + np.exp(-np.clip(-(x - mid) / s, -60.0, 60.0)))
        slope = (1.0 - f) * u * sig * (1.0 - sig) / s
        cols = [(1.0 - f) * sig, slope, slope * (x - mid)]  # d/du, d/dmid, d/dlog(scale)
        if chance is None:
            cols.insert(0, 1.0 - u * sig)  # d/dfloor
        return np.stack(cols, axis=1) / sd[:, None]

    def solve(v0: np.ndarray, p_w: np.ndarray) -> tuple[np.ndarray, float]:
        sd = (
            np.ones_like(y)
            if n_q is None
            else np.sqrt(np.maximum(p_w * (1 - p_w), _MIN_P * (1 - _MIN_P)) / n_q)
        )
        r = least_squares(
            lambda v: (sigmoid_link(x, unpack(v)) - y) / sd,
            v0,
            jac=lambda v: jac(v, sd),
            bounds=(lo, hi),
            method="trf",
        )
        return r.x, float(r.cost)

    if start is not None:  # a refit: weights at the start, one solve
        return unpack(solve(pack(start), sigmoid_link(x, start))[0])
    else:
        f0 = chance if chance is not None else 0.5 * float(y.min())
        c0 = min(1.0, float(y.max()) + 0.1)
        starts = [
            pack(np.array([f0, max(c0, f0 + 0.01), mid, span * s]))
            for mid in (float(np.median(x)), float(x.min()), float(x.max()))
            for s in (0.25, 1.0)
        ]
    p_obs = np.clip(y, _MIN_P, 1 - _MIN_P)
    best = min((solve(v0, p_obs) for v0 in starts), key=lambda t: t[1])[0]
    best, _ = solve(best, sigmoid_link(x, unpack(best)))  # reweight at the fitted accuracy
    return unpack(best)


def _refit_resamples(
    x: np.ndarray,
    y: np.ndarray,
    n_q: np.ndarray | None,
    chance: float | None,
    theta: np.ndarray,
    counts: np.ndarray,
) -> np.ndarray:
    """Bootstrap refits ``(B, 4)``: cell ``i`` counted ``counts[b, i]`` times in resample
    ``b``, every resample refitted at once by a bounded Levenberg-Marquardt from the point
    fit ``theta``, with the point fit's binomial weights (as a refit of resampled cells
    would use). A resample with too few distinct losses keeps the point fit."""
    span = max(float(x.max() - x.min()), 1e-3)
    lo = np.array([0.0, 1e-3, float(x.min()) - 3 * span, math.log(span / 50)])
    hi = np.array([max(float(y.min()), 1e-3), 1.0, float(x.max()) + 3 * span, math.log(span * 20)])
    free = slice(1, 4) if chance is not None else slice(0, 4)
    f0, c0, m0, s0 = theta
    v0 = np.array([f0, (c0 - f0) / (1.0 - f0), m0, math.log(s0)])
    v0 = np.clip(v0, lo + 1e-9, hi - 1e-9)
    n_boot = len(counts)
    v = np.tile(v0, (n_boot, 1))  # (B, 4): floor, u, mid, log scale
    p0 = sigmoid_link(x, theta)
    sd = (
        np.ones_like(y)
        if n_q is None
        else np.sqrt(np.maximum(p0 * (1 - p0), _MIN_P * (1 - _MIN_P)) / n_q)
    )
    w = counts / sd**2  # (B, n)

    def model(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f, u, mid, s = v[:, 0:1], v[:, 1:2], v[:, 2:3], np.exp(v[:, 3:4])
        sig = 1.0 / (1.0 + np.exp(-np.clip(-(x - mid) / s, -60.0, 60.0)))  # (B, n)
        pred = f + (1.0 - f) * u * sig
        slope = (1.0 - f) * u * sig * (1.0 - sig) / s
        jac = np.stack([1.0 - u * sig, (1.0 - f) * sig, slope, slope * (x - mid)], axis=-1)
        return pred, jac[..., free]  # (B, n), (B, n, k)

    def cost(pred: np.ndarray) -> np.ndarray:
        return np.sum(w * (pred - y) ** 2, axis=1)

    lam = np.full(n_boot, 1e-3)
    pred, jac = model(v)
    c = cost(pred)
    k = jac.shape[-1]
    for _ in range(60):
        g = np.einsum("bnk,bn->bk", jac, w * (pred - y))
        h = np.einsum("bnk,bn,bnj->bkj", jac, w, jac)
        diag = np.einsum("bkk->bk", h)
        a = h + (lam[:, None] * np.maximum(diag, 1e-12))[:, :, None] * np.eye(k)
        step = -np.linalg.solve(a, g[..., None])[..., 0]
        trial = v.copy()
        trial[:, free] = np.clip(v[:, free] + step, lo[free] + 1e-9, hi[free] - 1e-9)
        t_pred, t_jac = model(trial)
        t_c = cost(t_pred)
        better = t_c < c
        v = np.where(better[:, None], trial, v)
        pred = np.where(better[:, None], t_pred, pred)
        jac = np.where(better[:, None, None], t_jac, jac)
        moved = np.abs(c - t_c)
        c = np.where(better, t_c, c)
        lam = np.where(better, lam / 3.0, lam * 4.0)
        if np.all((moved <= 1e-10 * (1.0 + c)) | (lam > 1e8)):
            break
    distinct = np.array([len(np.unique(x[row > 0])) for row in counts])
    v[distinct < MIN_CELLS - (chance is not None)] = v0
    f, u = v[:, 0], v[:, 1]
    return np.stack([f, f + (1.0 - f) * u, v[:, 2], np.exp(v[:, 3])], axis=1)
