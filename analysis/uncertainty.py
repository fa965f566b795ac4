"""Extrapolation-honest uncertainty: how far a prediction reaches beyond the data, and
how wrong the laws were when they reached that far before.

A law fitted to small budgets and asked about a large one is wrong in ways the
bootstrap over cells cannot see: every candidate form fits the sampled range and they
part beyond it, and errors grow with the reach. Two terms widen the bootstrap:

- **extrapolation error**: the sd of the log metric grows linearly in the log
  extrapolation factor ``R``, ``sd = rate * R``. ``rate`` is estimated from the
  rolling-origin folds of `analysis.validate` (each fold fitted on smaller budgets
  predicted larger ones at a known reach), shrunk toward `PRIOR_RATE` with
  `PRIOR_WEIGHT` pseudo-groups, so that a grid with few folds does not claim a zero
  rate.
- **law disagreement**: the spread of the candidate laws' predictions, weighted by the
  inverse of their rolling-origin mean squared log error (forecast combination).

Within the sampled ranges ``R = 0`` and only the bootstrap and the law spread remain.

References
----------
.. [1] Bates and Granger 1969, "The combination of forecasts" (inverse-error weights).
.. [2] Tashman 2000, "Out-of-sample tests of forecasting accuracy" (rolling origins).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

PRIOR_RATE = 0.01
"""Prior extrapolation error: sd of the log metric per e-fold of reach (1 % per e-fold).
`benchmarks/calibration.py` measures the coverage this gives on laws in and outside the
library; the folds of a table move the rate away from it as they accumulate."""
PRIOR_WEIGHT = 1.0
"""Pseudo-groups (source x variable) behind `PRIOR_RATE`."""
REACH_VARIABLES = ("train_tokens", "curation_spend", "model_params")
"""Budget variables along which reach is measured and folds are rolled."""


@dataclass(frozen=True, kw_only=True)
class FoldError:
    """One held-out prediction of a rolling-origin fold, reduced to what the rate needs."""

    group: tuple[str, str]
    """``(source, variable)``: errors within a group share a fit and are not independent."""
    log_error: float
    """``log(predicted / observed)``."""
    log_reach: float
    """``log(held-out value / largest fitted value)`` along the fold's variable (> 0)."""
    noise_var: float
    """Variance of the observation's log (seed noise over its seeds)."""


def extrapolation_rate(
    errors: Iterable[FoldError],
    *,
    prior_rate: float = PRIOR_RATE,
    prior_weight: float = PRIOR_WEIGHT,
) -> float:
    """The sd of the log metric per unit of log reach, from fold errors and the prior.

    Per group, the mean of ``(e^2 - noise) / R^2`` (clipped at 0); groups then count
    once each beside ``prior_weight`` pseudo-groups at ``prior_rate^2``.
    """
    per_group: dict[tuple[str, str], list[float]] = {}
    for e in errors:
        if e.log_reach <= 0 or not math.isfinite(e.log_error):
            continue
        excess = max(e.log_error**2 - e.noise_var, 0.0)
        per_group.setdefault(e.group, []).append(excess / e.log_reach**2)
    total = prior_weight * prior_rate**2 + sum(float(np.mean(v)) for v in per_group.values())
    return math.sqrt(total / (prior_weight + len(per_group)))


def reach(
    point: Mapping[str, np.ndarray], sampled: Mapping[str, tuple[float, float]]
) -> dict[str, np.ndarray]:
    """Extrapolation factor (>= 1) per variable: how far ``point`` lies outside the sampled
    ``(min, max)``, as a ratio (``1`` inside)."""
    out = {}
    for v, x in point.items():
        if v not in sampled:
            continue
        lo, hi = sampled[v]
        x = np.asarray(x, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            above = np.where(x > hi, x / hi, 1.0) if hi > 0 else np.ones_like(x)
            below = np.where((x < lo) & (x > 0), lo / np.maximum(x, 1e-300), 1.0)
        out[v] = np.maximum(above, below)
    return out


def log_reach(factors: Mapping[str, np.ndarray]) -> np.ndarray:
    """Combined log reach ``sqrt(sum_v log(f_v)^2)``: variables' errors add in quadrature."""
    if not factors:
        return np.zeros(())
    logs = [np.log(np.asarray(f, dtype=float)) ** 2 for f in factors.values()]
    return np.sqrt(np.sum(np.broadcast_arrays(*logs), axis=0))


def law_weights(mse: Mapping[str, float]) -> dict[str, float]:
    """Inverse-MSE weights of candidate laws (equal when none was validated)."""
    finite = {k: v for k, v in mse.items() if math.isfinite(v)}
    if not finite:
        return {k: 1.0 / len(mse) for k in mse} if mse else {}
    floor = max(max(finite.values()) * 1e-6, 1e-12)
    inv = {k: 1.0 / max(finite.get(k, math.inf), floor) for k in mse}
    total = sum(inv.values())
    return {k: v / total for k, v in inv.items()}


def widen(log_draws: np.ndarray, extra_sd: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Draws ``(B, n)`` plus ``extra_sd (n,) * z (B,)``: one normal per draw keeps a draw's
    error smooth along a curve (a law that is wrong at one budget is wrong at its
    neighbours), and a symmetric term keeps the draws' median where it was."""
    return log_draws + np.asarray(extra_sd)[None, :] * z[:, None]
