"""The proposer's belief about each source's law: a fit plus a cheap posterior ensemble.

Per source, the law is fitted (least squares on log metric) from several starts. Every
start that ends as good as the best (within a few noise units of squared log error)
is kept: where the data allow several optima, their disagreement is part of the
uncertainty. Around each kept optimum a Laplace (Gauss-Newton) Gaussian of the
log-parameters gives an importance proposal; its draws are reweighted to the exact
posterior and resampled (`posterior_draws`), because with fewer cells than parameters the
posterior bends along a ridge the Gaussian leaves, and draws off it predict the cells
already run worse than their noise.

Priors. The law's shape parameters (the data exponent ``beta``, the repetition
half-life ``R_star``) are poorly identified by a few cells on one pool: with two to four
cells per source a four-parameter law has a ridge of near-exact fits, and the fit jumps
along it as cells arrive, flipping the decision back and forth. A fixed,
weakly-informative Gaussian prior on their logarithms (`LawPrior`, centred on published
fits, see `DEFAULT_LAW_PRIOR`) enters the fit (a penalised, i.e. MAP, least squares)
and the posterior; the data override it as soon as they constrain the
parameter. Parameters without such a prior (the offset ``E`` and amplitude ``B``,
which are linear and set by the data once the shape is) get a weak Gaussian prior
(``prior_sd`` in log units) around the best optimum. The resampled draws form an
ensemble of parameter vectors; predictions of the ensemble at any cells
give their joint covariance, which is what the proposer's fantasy updates use.

The noise of one cell (relative, i.e. on log bpb) is pooled over sources: every
source is annealed from the same model and evaluated on the same held-out set.
A prior noise level with a few pseudo-degrees of freedom keeps it sane with few cells.

References
----------
.. [1] MacKay 1992, "Bayesian interpolation" (the Laplace approximation).
.. [2] Evensen 2003, "The Ensemble Kalman Filter" (covariances from an ensemble).
.. [3] Gelman et al. 2008, "A weakly informative default prior distribution for logistic
   and other regression models" (priors that regularise without dominating the data).
.. [4] Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models" (data
   exponent 0.28); Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt"
   (0.37); Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"
   (repetition half-life R_D* = 15.4 epochs).
.. [5] Cappé, Guillin, Marin and Robert 2004, "Population Monte Carlo" (importance
   sampling with proposals refitted to the weighted draws).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.laws import Law
from annealscale.analysis.solve import log_bounds, refine, screen
from annealscale.analysis.sources import PoolModel, law_inputs, pool_model

_OPTIMA_KEEP = 8.0
"""Optima whose squared log error exceeds the best by more than this many noise
variances are dropped (their weight ``exp(-delta / 2 sigma^2)`` is below 2 %)."""
_OPTIMA_DISTINCT = 0.05
"""Optima closer than this in every log-parameter count as one."""


@dataclass(frozen=True, kw_only=True)
class LawPrior:
    """Independent Gaussian priors on the logarithms of some of a law's parameters.

    ``terms``: ``(parameter name, centre in the parameter's own units, sd of its log)``;
    parameters a law does not have are ignored, so one prior serves every law that
    shares the names.
    """

    terms: tuple[tuple[str, float, float], ...]

    def __post_init__(self) -> None:
        for name, centre, sd in self.terms:
            if not (centre > 0 and sd > 0 and math.isfinite(centre) and math.isfinite(sd)):
                raise AnalysisError(
                    f"law prior of {name!r}: centre and sd must be positive and finite; "
                    f"got ({centre}, {sd})"
                )

    def vectors(self, law: Law) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, inverse variance)`` over ``law.param_names`` in log units; inverse
        variance 0 where the prior says nothing."""
        mean, inv_var = np.zeros(law.n_params), np.zeros(law.n_params)
        for name, centre, sd in self.terms:
            if name in law.param_names:
                j = law.param_names.index(name)
                mean[j], inv_var[j] = math.log(centre), 1.0 / sd**2
        return mean, inv_var


DEFAULT_LAW_PRIOR = LawPrior(terms=(("beta", 0.3, math.log(2.0)), ("R_star", 15.4, 1.0)))
"""The data exponent ``beta`` centred on 0.3 (Chinchilla's 0.28 [4]_, its replication's
0.37) within a factor 2 per sd (95 %: 0.08 to 1.2, Kaplan-like shallow exponents
included); the repetition half-life ``R_star`` on Muennighoff et al.'s 15.4 epochs within
a factor e per sd (95 %: 2 to 110 epochs). Both are wide next to what a few cells spread
over a decade of tokens measure; they only stop a fit from running along a ridge."""


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


def map_fit(
    law: Law,
    x: np.ndarray,
    y: np.ndarray,
    cache: FitCache | None = None,
    *,
    prior: LawPrior | None = None,
    sigma: float = 0.01,
) -> MapFit:
    """Least squares on log metric (penalised by ``prior`` for noise ``sigma``: the
    posterior mode) from the best distinct starts of a grid screen, all refined at once by
    the batched solver (`analysis.solve`); cached by the data. Optima are ordered by the
    penalised objective; ``MapFit.sse`` holds their plain squared log errors.

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
            prior,
            sigma if prior is not None else None,
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
    mean, inv_var = prior.vectors(law) if prior is not None else (None, None)
    if prior is not None:
        lo, hi = log_bounds(law)
        start = starts[0].copy()
        start[inv_var > 0] = np.clip(mean, lo, hi)[inv_var > 0]
        starts.append(start)  # the best screen point moved to the prior's centre
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
        prior_mean=mean,
        prior_precision=None if inv_var is None else sigma**2 * inv_var,
    )
    pred = np.maximum(law.evaluate(xd, np.exp(res.u)), np.finfo(float).tiny)
    sse = np.sum((np.log(pred) - np.log(y)[None, :]) ** 2, axis=-1)
    idx = np.argsort(res.loss, kind="stable")  # penalised: the solver's loss is r**2 / 2
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


def posterior_draws(
    fit: MapFit,
    x: np.ndarray,
    y: np.ndarray,
    *,
    sigma: float,
    n_draws: int,
    prior_sd: float,
    rng: np.random.Generator,
    proposal_scale: float = 1.5,
    prior: LawPrior | None = None,
) -> tuple[np.ndarray, int]:
    """``(B, p)`` parameter draws from the posterior, with the Laplace mixture over the
    fit's optima as the importance proposal.

    The posterior: the Gaussian likelihood of the cells (noise ``sigma`` on log metric),
    ``prior`` on the parameters it names, and a Gaussian of sd ``prior_sd`` (log units)
    around the best optimum on the others, within the law's bounds. The proposal: each
    optimum's Laplace Gaussian (Gauss-Newton information plus the prior's precision),
    weighted by its posterior density, its sd widened by ``proposal_scale``.

    Why not the Laplace draws themselves: with fewer well-spread cells than parameters the
    posterior lies along a curved ridge of near-exact fits, and the Gaussian's straight
    tangent leaves it. On the simulator, three seed cells measured with 1.2 % noise got a
    Laplace predictive sd of 5 % at those very cells, so re-measuring a cell already run
    looked as informative as extrapolating, and P(best) came from curves the data rule
    out. The proposals are therefore reweighted to the exact posterior density and
    resampled (systematic resampling); when the weights are too uneven (effective sample
    size below half of ``n_draws``) the proposal is refitted to the weighted draws' mean
    and covariance, mixed with the first, and drawn again, up to ``_IS_ROUNDS`` times
    (adaptive importance sampling [5]_). Returns the draws and the number of optima in
    the proposal.

    Limit: a ridge that bends far beyond the widened Gaussians' reach is covered only as
    far as they reach (its far ends get no draws), so the spread there is understated;
    the draws are still all consistent with the cells, which the Laplace draws were not.
    """
    law = fit.law
    xd = law.design(x)
    log_y = np.log(y)
    lo, hi = log_bounds(law)
    p = law.n_params
    mean, inv_var = prior.vectors(law) if prior is not None else (np.zeros(p), np.zeros(p))
    prior_precision = np.where(inv_var > 0, inv_var, 1.0 / prior_sd**2)
    modes: list[tuple[float, np.ndarray, np.ndarray]] = []
    for th in fit.thetas:
        pred, grad = law.evaluate_with_grad(xd, th)
        pred = np.maximum(pred, np.finfo(float).tiny)
        r = np.log(pred) - log_y
        jac = grad * th[None, :] / pred[:, None]  # (n, p): d log L / d log theta
        u = np.log(th)
        nlp = float(np.sum(r**2)) / (2.0 * sigma**2) + 0.5 * float(
            np.sum(inv_var * (u - mean) ** 2)
        )
        modes.append((nlp, u, jac))
    modes.sort(key=lambda m: m[0])
    best = modes[0][0]
    kept: list[tuple[float, np.ndarray, np.ndarray]] = []
    for nlp, u, jac in modes:
        if nlp - best > _OPTIMA_KEEP / 2.0:
            continue
        if any(np.max(np.abs(u - v)) < _OPTIMA_DISTINCT for _, v, _ in kept):
            continue
        kept.append((nlp, u, jac))
    w = np.array([math.exp(-(nlp - best)) for nlp, _, _ in kept])
    proposal = [
        GaussianProposal(
            mean=u,
            chol=np.linalg.cholesky(jac.T @ jac / sigma**2 + np.diag(prior_precision)),
            weight=float(wk / w.sum()),
        )
        for (_, u, jac), wk in zip(kept, w, strict=True)
    ]
    centre, free = kept[0][1], inv_var == 0

    def log_posterior(u: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            pred = law.evaluate(xd, np.exp(u))
            r = np.log(np.maximum(pred, np.finfo(float).tiny)) - log_y[None, :]
        out = (
            -np.sum(r**2, axis=1) / (2.0 * sigma**2)
            - 0.5 * np.sum(inv_var * (u - mean) ** 2, axis=1)
            - 0.5 * np.sum((u - centre)[:, free] ** 2, axis=1) / prior_sd**2
        )
        inside = np.all((u >= lo) & (u <= hi), axis=1)
        return np.where(inside & np.isfinite(out), out, -np.inf)

    u, weights = importance_sample(
        log_posterior,
        proposal,
        n=_PROPOSALS_PER_DRAW * n_draws,
        scale=proposal_scale,
        ess_goal=n_draws / 2.0,
        rng=rng,
    )
    return np.exp(resample(u, weights, n_draws, rng)), len(kept)


_PROPOSALS_PER_DRAW = 8
"""Importance proposals drawn per posterior draw kept (8 rather than 4: a larger sample
behind the same ensemble; `benchmarks/adaptive.py` ran no slower with it)."""
_IS_ROUNDS = 3
"""Proposal refits at most, when the importance weights are too uneven."""


@dataclass(frozen=True)
class GaussianProposal:
    """One proposal component in log-parameter space: ``chol`` is the Cholesky factor of
    its precision."""

    mean: np.ndarray
    chol: np.ndarray
    weight: float

    def widened(self, scale: float, weight: float | None = None) -> GaussianProposal:
        """The same Gaussian with its sd times ``scale`` (and another weight)."""
        return GaussianProposal(
            mean=self.mean, chol=self.chol / scale, weight=self.weight if weight is None else weight
        )


def importance_sample(
    log_target,
    proposal: list[GaussianProposal],
    *,
    n: int,
    scale: float,
    ess_goal: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``(u (n, p), normalised weights (n,))`` approximating the density ``exp(log_target)``
    (unnormalised, vectorised over rows) from a Gaussian-mixture proposal widened by
    ``scale``. While the effective sample size ``1 / sum(w**2)`` is below ``ess_goal``,
    half of the next proposal is one Gaussian with the weighted draws' mean and covariance
    and half the first proposal (a defensive mixture: a refit from a few heavy draws may be
    degenerate); the round with the largest effective sample size is returned."""
    first = [g.widened(scale) for g in proposal]
    mixture = first
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(_IS_ROUNDS):
        u = _draw(mixture, n, rng)
        log_w = log_target(u) - _mixture_logpdf(u, mixture)
        if not np.any(np.isfinite(log_w)):
            continue
        w = np.exp(log_w - np.max(log_w))
        w /= w.sum()
        ess = 1.0 / float(np.sum(w**2))
        if best is None or ess > best[0]:
            best = (ess, u, w)
        if ess >= ess_goal:
            break
        mu = w @ u
        cov = (u - mu).T @ ((u - mu) * w[:, None]) + 1e-8 * np.eye(len(mu))
        # the moments already span the posterior: widen a little for its tails
        refit = GaussianProposal(mean=mu, chol=np.linalg.cholesky(np.linalg.inv(cov)), weight=1)
        mixture = [refit.widened(1.2, 0.5), *(g.widened(1.0, 0.5 * g.weight) for g in first)]
    if best is None:
        raise AnalysisError("every posterior proposal lies outside the law's bounds")
    return best[1], best[2]


def _draw(proposal: list[GaussianProposal], n: int, rng: np.random.Generator) -> np.ndarray:
    weights = np.array([g.weight for g in proposal])
    counts = np.floor(weights / weights.sum() * n).astype(int)
    counts[np.argsort(-weights, kind="stable")[: n - counts.sum()]] += 1
    out = []
    for g, k in zip(proposal, counts, strict=True):
        z = rng.standard_normal((k, len(g.mean)))
        out.append(g.mean + np.linalg.solve(g.chol.T, z.T).T)  # cov = precision^-1
    return np.concatenate(out)


def _mixture_logpdf(u: np.ndarray, proposal: list[GaussianProposal]) -> np.ndarray:
    p = u.shape[1]
    total = sum(g.weight for g in proposal)
    terms = []
    for g in proposal:
        z = (u - g.mean) @ g.chol
        log_det = float(np.sum(np.log(np.diag(g.chol))))
        terms.append(math.log(g.weight / total) + log_det - 0.5 * np.sum(z**2, axis=1))
    return np.logaddexp.reduce(np.stack(terms), axis=0) - 0.5 * p * math.log(2 * math.pi)


def resample(u: np.ndarray, weights: np.ndarray, n: int, rng: np.random.Generator):
    """``n`` rows of ``u`` by systematic resampling with ``weights`` (summing to 1)."""
    positions = (rng.random() + np.arange(n)) / n
    idx = np.searchsorted(np.cumsum(weights), positions)
    return u[np.minimum(idx, len(u) - 1)]


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
    proposal_scale: float = 1.5,
    noise_prior: float,
    noise_prior_weight: float,
    seed: int,
    cache: FitCache | None = None,
    metric: str = "domain_bpb",
    prior: LawPrior | None = None,
) -> tuple[dict[str, SourcePosterior], float]:
    """Posterior ensembles of every source with at least two distinct cells, and the noise.

    With a ``prior`` the fits are posterior modes, whose balance of data and prior depends
    on the noise: fitted first at the prior noise level ``noise_prior``, then once more at
    the pooled noise those fits give (one fixed-point step)."""
    missing = [c for c in law.columns if c not in finished.columns]
    if missing:
        raise AnalysisError(f"law {law.name!r} needs column(s) {', '.join(missing)}")
    data: dict[str, tuple[MapFit, np.ndarray, np.ndarray]] = {}
    for source, rows in finished.groupby("source", sort=True):
        x = rows[list(law.columns)].to_numpy(float)
        y = rows[metric].to_numpy(float)
        if len(np.unique(x, axis=0)) < 2:
            continue
        fit = map_fit(law, x, y, cache, prior=prior, sigma=noise_prior)
        data[str(source)] = (fit, x, y)
    sigma = pooled_noise(data, prior=noise_prior, prior_weight=noise_prior_weight)
    if prior is not None and data:
        data = {
            src: (map_fit(law, x, y, cache, prior=prior, sigma=sigma), x, y)
            for src, (_, x, y) in data.items()
        }
        sigma = pooled_noise(data, prior=noise_prior, prior_weight=noise_prior_weight)
    out: dict[str, SourcePosterior] = {}
    for i, (source, (fit, x, y)) in enumerate(sorted(data.items())):
        rng = np.random.default_rng([seed, i, len(y)])
        theta, n_opt = posterior_draws(
            fit,
            x,
            y,
            sigma=sigma,
            n_draws=n_draws,
            prior_sd=prior_sd,
            rng=rng,
            proposal_scale=proposal_scale,
            prior=prior,
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
