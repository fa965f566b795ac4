"""The proposer's belief about each source's law: a fit plus a cheap posterior ensemble.

Per source, the law is fitted (least squares on log metric) from several starts. Every
start that ends as good as the best (within a few noise units of squared log error)
is kept: where the data allow several optima, their disagreement is part of the
uncertainty. Around each kept optimum the posterior of the log-parameters is
approximated by a Laplace (Gauss-Newton) Gaussian with a weak Gaussian prior
(``prior_sd`` in log units), so that a source with fewer cells than parameters still
gets an honest, wide posterior instead of a singular one. Drawing from this mixture
gives an ensemble of parameter vectors; predictions of the ensemble at any cells
give their joint covariance, which is what the proposer's fantasy updates use.

The noise of one cell (relative, i.e. on log bpb) is pooled over sources: every
source is annealed from the same model and evaluated on the same held-out set.
A prior noise level with a few pseudo-degrees of freedom keeps it sane with few cells.

References
----------
.. [1] MacKay 1992, "Bayesian interpolation" (the Laplace approximation).
.. [2] Evensen 2003, "The Ensemble Kalman Filter" (covariances from an ensemble).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.laws import Law
from analysis.solve import log_bounds, refine, screen
from analysis.sources import PoolModel, law_inputs, pool_model

_OPTIMA_KEEP = 8.0
"""Optima whose squared log error exceeds the best by more than this many noise
variances are dropped (their weight ``exp(-delta / 2 sigma^2)`` is below 2 %)."""
_OPTIMA_DISTINCT = 0.05
"""Optima closer than this in every log-parameter count as one."""


@dataclass(frozen=True, kw_only=True)
class SourcePosterior:
    """One source's fitted law and its posterior ensemble."""

    source: str
    law: Law
    fit: MapFit
    theta: np.ndarray
    """(B, p) parameter draws."""
    n_optima: int
    """Distinct optima in the mixture."""
    pool: PoolModel
    n_cells: int

    def design(self, train_tokens: np.ndarray, spend: np.ndarray) -> np.ndarray:
        return law_inputs(self.law, self.pool, train_tokens, spend)

    def log_draws(self, train_tokens, spend) -> np.ndarray:
        """``log`` of the metric predicted by every draw at the budgets: ``(B, n)``."""
        xd = self.design(np.asarray(train_tokens, float), np.asarray(spend, float))
        pred = self.law.evaluate(xd, self.theta)
        return np.log(np.maximum(pred, np.finfo(float).tiny))

    def log_point(self, train_tokens, spend) -> np.ndarray:
        xd = self.design(np.asarray(train_tokens, float), np.asarray(spend, float))
        return np.log(np.maximum(self.law.evaluate(xd, self.fit.theta), np.finfo(float).tiny))


@dataclass(frozen=True, kw_only=True)
class MapFit:
    """The optima of one source's law: ``thetas (k, p)`` best first, with their squared
    log errors ``sse (k,)``."""

    law: Law
    thetas: np.ndarray
    sse: np.ndarray

    @property
    def theta(self) -> np.ndarray:
        return self.thetas[0]


FitCache = MutableMapping[tuple, MapFit]

_SCREEN_GRID = 12
_STARTS = 6


def map_fit(law: Law, x: np.ndarray, y: np.ndarray, cache: FitCache | None = None) -> MapFit:
    """Least squares on log metric from the best distinct starts of a grid screen, all
    refined at once by the batched solver (`analysis.solve`); cached by the data.

    Squared (not Huber) loss: the Laplace posterior around each optimum assumes Gaussian
    noise. The proposer refits after every batch, so this is the batched path rather than
    `analysis.fit.fit_law`'s one-start-at-a-time refinement.
    """
    key = None
    if cache is not None:
        key = (
            law.name,
            np.ascontiguousarray(x, float).tobytes(),
            np.ascontiguousarray(y, float).tobytes(),
        )
        if key in cache:
            return cache[key]
    xd = law.design(x)
    w = np.ones((1, len(y)))
    cand = screen(law, xd, y[None, :], w, n_grid=_SCREEN_GRID, offset_fractions=(0.5, 0.9))
    order = np.argsort(cand.score[0], kind="stable")
    starts: list[np.ndarray] = []
    for i in order:
        u = cand.u[0, i]
        if all(np.max(np.abs(u - v)) > 0.05 for v in starts):
            starts.append(u)
        if len(starts) == _STARTS:
            break
    u0 = np.stack(starts)  # (k, p)
    k = len(u0)
    res = refine(
        law,
        xd,
        np.repeat(np.log(y)[None, :], k, axis=0),
        np.ones((k, len(y))),
        u0,
        delta=math.inf,
        max_iter=200,
        tol=1e-10,
    )
    sse = 2.0 * res.loss  # the solver's squared loss is r**2 / 2
    idx = np.argsort(sse, kind="stable")
    fit = MapFit(law=law, thetas=np.exp(res.u[idx]), sse=sse[idx])
    if cache is not None and key is not None:
        cache[key] = fit
    return fit


def pooled_noise(
    fits: Mapping[str, tuple[MapFit, np.ndarray, np.ndarray]],
    *,
    prior: float,
    prior_weight: float,
) -> float:
    """Relative noise of one cell (sd of log metric), pooled over sources with a prior."""
    sse, dof = prior_weight * prior**2, prior_weight
    for fit, x, y in fits.values():
        pred = fit.law.evaluate(fit.law.design(x), fit.theta)
        r = np.log(np.maximum(pred, np.finfo(float).tiny)) - np.log(y)
        sse += float(np.sum(r**2))
        dof += max(len(y) - fit.law.n_params, 0)
    return math.sqrt(sse / dof)


def laplace_draws(
    fit: MapFit,
    x: np.ndarray,
    y: np.ndarray,
    *,
    sigma: float,
    n_draws: int,
    prior_sd: float,
    rng: np.random.Generator,
    inflation: float = 1.0,
) -> tuple[np.ndarray, int]:
    """``(B, p)`` parameter draws from the Laplace mixture over the fit's optima."""
    law = fit.law
    xd = law.design(x)
    log_y = np.log(y)
    lo, hi = log_bounds(law)
    modes: list[tuple[float, np.ndarray, np.ndarray]] = []
    for th in fit.thetas:
        pred, grad = law.evaluate_with_grad(xd, th)
        pred = np.maximum(pred, np.finfo(float).tiny)
        r = np.log(pred) - log_y
        jac = grad * th[None, :] / pred[:, None]  # (n, p): d log L / d log theta
        modes.append((float(np.sum(r**2)), np.log(th), jac))
    modes.sort(key=lambda m: m[0])
    best = modes[0][0]
    kept: list[tuple[float, np.ndarray, np.ndarray]] = []
    for sse, u, jac in modes:
        if sse - best > _OPTIMA_KEEP * sigma**2:
            continue
        if any(np.max(np.abs(u - v)) < _OPTIMA_DISTINCT for _, v, _ in kept):
            continue
        kept.append((sse, u, jac))
    w = np.array([math.exp(-(sse - best) / (2.0 * sigma**2)) for sse, _, _ in kept])
    w /= w.sum()
    counts = np.floor(w * n_draws).astype(int)
    counts[: n_draws - counts.sum()] += 1  # largest weights first (kept is sorted)
    p = law.n_params
    out = []
    for (_, u, jac), k in zip(kept, counts, strict=True):
        if k == 0:
            continue
        precision = jac.T @ jac / sigma**2 + np.eye(p) / prior_sd**2
        chol = np.linalg.cholesky(precision)
        z = rng.standard_normal((k, p))
        du = np.linalg.solve(chol.T, z.T).T  # covariance = precision^-1
        out.append(np.clip(u + inflation * du, lo, hi))
    return np.exp(np.concatenate(out)), len(kept)


def known_pools(
    finished: pd.DataFrame, candidates, *, domain_fraction: float | None = None
) -> pd.DataFrame:
    """Rows describing every known (source, spend, tokens) point, for `pool_model`.

    Finished rows come first (their measured pool size and domain tokens); candidates
    add their spends with their pool size when known, and domain tokens ``r * D``.
    """
    cols = ["source", "curation_spend", "train_tokens"]
    extra = [c for c in ("unique_tokens", "domain_tokens", "model_params") if c in finished]
    base = finished[cols + extra].copy() if len(finished) else pd.DataFrame(columns=cols + extra)
    r = domain_fraction
    if r is None and "domain_tokens" in finished and len(finished):
        r = float(np.median(finished["domain_tokens"] / finished["train_tokens"]))
    rows = []
    for c in candidates:
        row = {
            "source": c.source,
            "curation_spend": c.curation_spend,
            "train_tokens": c.train_tokens,
        }
        if "unique_tokens" in extra:
            row["unique_tokens"] = c.unique_tokens if c.unique_tokens is not None else np.nan
        if "domain_tokens" in extra:
            row["domain_tokens"] = (r if r is not None else 1.0) * c.train_tokens
        if "model_params" in extra:
            row["model_params"] = float(finished["model_params"].max())
        rows.append(row)
    if rows:
        base = pd.concat([base, pd.DataFrame(rows)], ignore_index=True)
    if "unique_tokens" in base:
        base = base[np.isfinite(base["unique_tokens"].astype(float))]
    return base


def fit_posteriors(
    finished: pd.DataFrame,
    pools: pd.DataFrame,
    law: Law,
    *,
    n_draws: int,
    prior_sd: float,
    inflation: float = 1.0,
    noise_prior: float,
    noise_prior_weight: float,
    seed: int,
    cache: FitCache | None = None,
    metric: str = "domain_bpb",
) -> tuple[dict[str, SourcePosterior], float]:
    """Posterior ensembles of every source with at least two distinct cells, and the noise."""
    missing = [c for c in law.columns if c not in finished.columns]
    if missing:
        raise AnalysisError(f"law {law.name!r} needs column(s) {', '.join(missing)}")
    data: dict[str, tuple[MapFit, np.ndarray, np.ndarray]] = {}
    for source, rows in finished.groupby("source", sort=True):
        x = rows[list(law.columns)].to_numpy(float)
        y = rows[metric].to_numpy(float)
        if len(np.unique(x, axis=0)) < 2:
            continue
        data[str(source)] = (map_fit(law, x, y, cache), x, y)
    sigma = pooled_noise(data, prior=noise_prior, prior_weight=noise_prior_weight)
    out: dict[str, SourcePosterior] = {}
    for i, (source, (fit, x, y)) in enumerate(sorted(data.items())):
        rng = np.random.default_rng([seed, i, len(y)])
        theta, n_opt = laplace_draws(
            fit, x, y, sigma=sigma, n_draws=n_draws, prior_sd=prior_sd, rng=rng, inflation=inflation
        )
        src_pools = pools[pools["source"] == source]
        out[source] = SourcePosterior(
            source=source,
            law=law,
            fit=fit,
            theta=theta,
            n_optima=n_opt,
            pool=pool_model(
                src_pools if len(src_pools) else finished[finished["source"] == source]
            ),
            n_cells=len(y),
        )
    return out, sigma
