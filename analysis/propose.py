"""Adaptive design: which cells to run next so the decision at the target becomes right
and sure for as little compute as possible.

Inputs: the finished cells (a results table), the candidate cells with a cost model
(`analysis.propose_costs`), and the target (`analysis.target.Target`): training tokens
and/or curation spend decide the best *source* there; a total cost decides the best
*allocation* (each source at its best split of the budget between curation and tokens).

Belief: per source, a fitted law with a posterior ensemble (`analysis.propose_model`).
The ensemble's predictions at the target and at every candidate give their joint
covariance; observing a candidate (noise ``sigma`` on log bpb) would shrink the target
variance of its source by ``cov(T, x)^2 / (var(x) + sigma^2)`` and move the target mean
by a normal amount of that variance (the preposterior of a linear-Gaussian update).

Score of a cell = (expected reduction of the probability of a wrong decision at the
target + ``variance_weight`` x expected fractional reduction of the target predictive
variance, each source's weighted by its probability of being best) / (marginal cost /
reference cost) ** ``cost_tempering`` (1 by default: gain per USD). The decision term is
a knowledge gradient on the probability of correct selection; the variance term keeps
learning where the decision is already confident but the curves are not, and because
the ensemble mixes every fit optimum the data allow, cells that tell optima apart score
high. Batches of ``q`` are chosen greedily and jointly: each chosen (and each running)
cell is fantasised before the next is scored, and curation already paid in the batch is
not charged again.

Seed design (before a source has enough cells to fit): one pool (by default the spend
nearest the geometric middle between its cheapest spend and the target's), at training
tokens spread over at least a decade where the candidates allow (smallest, geometric
middle, and the smallest count at least ten times the smallest, else the largest). On the
simulator the seed's decade of tokens is what makes the decision right. After it, gain per
USD buys the large-token cells that measure the decision rather than cheap cells near
those already run, because the posterior draws agree with the cells already run
(`analysis.propose_model.posterior_draws`): a cell the draws already agree on has no
gain.

References
----------
.. [1] Frazier, Powell and Dayanik 2008, "A knowledge-gradient policy for sequential
   information collection" (expected improvement of the probability of correct
   selection).
.. [2] Li et al. 2026, "Spend Less, Fit Better" (cost-aware sequential design for
   scaling-law fits).
.. [3] Ginsbourger, Le Riche and Carraro 2010, "Kriging is well-suited to parallelize
   optimization" (fantasised pending points in batch designs).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr

from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.laws import Law, get_law
from annealscale.analysis.propose_costs import CandidateCell, CellCostModel, PoolReuseCosts
from annealscale.analysis.propose_model import (
    FitCache,
    LawPrior,
    SourcePosterior,
    fit_posteriors,
    known_pools,
)
from annealscale.analysis.target import Target

_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(16)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()
_TINY = 1e-300
SEED_POOLS = ("middle", "cheapest")


@dataclass(frozen=True, kw_only=True)
class ProposerSettings:
    """How the proposer models and scores; defaults were chosen on `analysis.simulate`."""

    law: str = "auto"
    """A law name, or ``auto``: ``effective_data`` when the table has pool sizes and domain
    tokens, else ``power_law_D``."""
    n_draws: int = 256
    """Posterior draws per source."""
    decision_weight: float = 1.0
    """Weight of the expected reduction in P(wrong decision); 0 gives a variance-only design."""
    variance_weight: float = 0.25
    """Weight of the expected fractional reduction of the target variance."""
    contention_weighted: bool = True
    """Weight each source's target variance by its probability of being best, so that
    variance is reduced where it can change the decision (False: plain predictive
    variance, summed over sources)."""
    cost_tempering: float = 1.0
    """Exponent of the cost in the score's denominator (0 ignores cost, 1 is gain per USD).
    `benchmarks/adaptive.py` (wide grid, q=3, 150 problems, an earlier version of the
    posterior sampler): 1.0 reaches 90 % decision accuracy at 0.092 of the grid's compute,
    0.5 at 0.138, 0.25 at 0.163; the current sampler reaches it at 0.117 with 1.0. (With
    the plain Laplace ensemble before it, whose draws strayed from the cells already run,
    cheap repeats looked informative and 0.25 was needed to keep the score off them.)"""
    law_prior: LawPrior | None = None
    """Fixed weakly-informative prior on the law's shape parameters (``beta``,
    ``R_star``), in the fit and the posterior (`analysis.propose_model`;
    `analysis.propose_model.DEFAULT_LAW_PRIOR` is centred on published fits); None (the
    default) fits them by plain least squares. With ``seed_points=2`` the prior keeps the
    recommendation from flipping as the first cells after the seed arrive (plain fits of
    two to four cells run along a ridge of exact fits); see `benchmarks/adaptive.py`
    ``--law-prior`` for what it does to the designs' costs."""
    prior_sd: float = 0.5
    """Prior sd of each log-parameter without a ``law_prior`` around its fitted value."""
    proposal_scale: float = 1.5
    """Widening of the Laplace Gaussians that propose posterior draws; the draws are
    reweighted to the exact posterior (`analysis.propose_model.posterior_draws`), so this
    sets only how well the proposal covers a posterior that bends away from them."""
    contention_floor: float = 0.05
    """Least weight of a source in the variance term (its probability of being best is
    itself an estimate)."""
    contention_temperature: float = 3.0
    """Weights are ``p_best ** (1 / temperature)``: above 1 they flatten, because the
    probabilities of a young, overconfident fit are too sharp to exclude a source."""
    noise_prior: float = 0.01
    """Prior relative noise of one cell (sd of log bpb)."""
    noise_prior_weight: float = 4.0
    """Pseudo-degrees of freedom of the noise prior."""
    seed_points: int = 3
    """Distinct training-token counts per source in the seed design."""
    seed_pool: str = "middle"
    """Which pool of a source the seed design uses: ``middle`` (the spend nearest the
    geometric middle between the cheapest spend and the target's) or ``cheapest``."""
    n_fantasies: int = 32
    """Quasi-random fantasy outcomes per expected-gain evaluation."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_draws < 16:
            raise AnalysisError(f"n_draws must be at least 16; got {self.n_draws}")
        if self.decision_weight < 0 or self.variance_weight < 0:
            raise AnalysisError("decision_weight and variance_weight must be non-negative")
        if self.decision_weight == 0 and self.variance_weight == 0:
            raise AnalysisError("decision_weight and variance_weight cannot both be 0")
        if not self.proposal_scale >= 1.0:
            raise AnalysisError(f"proposal_scale must be at least 1; got {self.proposal_scale}")
        if not 0.0 <= self.cost_tempering <= 2.0:
            raise AnalysisError(f"cost_tempering must lie in [0, 2]; got {self.cost_tempering}")
        if self.seed_points < 2:
            raise AnalysisError(f"seed_points must be at least 2; got {self.seed_points}")
        if self.seed_pool not in SEED_POOLS:
            raise AnalysisError(
                f"seed_pool must be one of {', '.join(SEED_POOLS)}; got {self.seed_pool!r}"
            )


@dataclass(frozen=True, kw_only=True)
class DecisionState:
    """What the current fits say at the target."""

    target: Target
    law: str
    p_best: Mapping[str, float]
    """Share of posterior draws in which each fitted source is best at its target point."""
    recommended: str | None
    predicted: Mapping[str, float]
    """Point prediction of the metric at each source's target point."""
    log_sd: Mapping[str, float]
    """Posterior sd of the log metric there (relative uncertainty)."""
    points: Mapping[str, tuple[float, float]]
    """``(train_tokens, curation_spend)`` of each source's target point."""
    unfitted: tuple[str, ...]
    """Sources without enough finished cells to fit."""
    sigma: float
    """Pooled relative noise of one cell."""

    @property
    def confidence(self) -> float:
        return self.p_best.get(self.recommended, 0.0) if self.recommended else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.to_dict(),
            "law": self.law,
            "recommended": self.recommended,
            "p_best": dict(self.p_best),
            "predicted": dict(self.predicted),
            "relative_sd": dict(self.log_sd),
            "points": {s: list(p) for s, p in self.points.items()},
            "unfitted": list(self.unfitted),
            "noise": self.sigma,
        }


@dataclass(frozen=True, kw_only=True)
class ProposedCell:
    """One proposed cell with why it was chosen."""

    cell: CandidateCell
    rank: int
    reason: str
    """``seed`` (seed design) or ``score``."""
    expected_gain: float
    """Decision gain plus weighted variance gain (NaN for seed cells)."""
    decision_gain: float
    """Expected reduction of P(wrong decision at the target), given the cells before it."""
    variance_gain: float
    """Expected fractional reduction of the summed target variance."""
    cost: float
    """Marginal cost (USD) after the cells already paid and those ranked before it."""
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            **self.cell.to_dict(),
            "reason": self.reason,
            "expected_gain": self.expected_gain,
            "decision_gain": self.decision_gain,
            "variance_gain": self.variance_gain,
            "cost": self.cost,
            "score": self.score,
        }


@dataclass(frozen=True, kw_only=True)
class Proposal:
    cells: tuple[ProposedCell, ...]
    state: DecisionState

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([c.to_dict() for c in self.cells])


def resolve_law(law: str | Law, finished: pd.DataFrame) -> Law:
    if isinstance(law, str) and law == "auto":
        cols = ("unique_tokens", "domain_tokens")
        if len(finished) and all(
            c in finished and np.all(np.isfinite(finished[c].astype(float))) for c in cols
        ):
            return get_law("effective_data")
        return get_law("power_law_D")
    return get_law(law)


class Proposer:
    """Fits, scores and batches; holds a cache of fits so repeated calls refit only the
    sources whose cells changed. ``propose`` and ``state`` are pure given the inputs."""

    def __init__(
        self,
        *,
        target: Target,
        costs: CellCostModel,
        settings: ProposerSettings | None = None,
        cache: FitCache | None = None,
    ):
        self.target = target
        self.costs = costs
        self.settings = settings or ProposerSettings()
        self.cache: FitCache = cache if cache is not None else _LRU(512)
        rng = np.random.default_rng(self.settings.seed + 12345)
        self._z_outer = rng.standard_normal((self.settings.n_fantasies, 64))

    # --- belief -----------------------------------------------------------------------

    def _posteriors(
        self, finished: pd.DataFrame, candidates: Sequence[CandidateCell]
    ) -> tuple[Law, dict[str, SourcePosterior], float]:
        law = resolve_law(self.settings.law, finished)
        if not len(finished):
            return law, {}, self.settings.noise_prior
        pools = known_pools(finished, candidates)
        s = self.settings
        posts, sigma = fit_posteriors(
            finished,
            pools,
            law,
            n_draws=s.n_draws,
            prior_sd=s.prior_sd,
            proposal_scale=s.proposal_scale,
            noise_prior=s.noise_prior,
            noise_prior_weight=s.noise_prior_weight,
            seed=s.seed,
            cache=self.cache,
            prior=s.law_prior,
        )
        return law, posts, sigma

    def _target_points(
        self, posts: Mapping[str, SourcePosterior], candidates: Sequence[CandidateCell]
    ) -> dict[str, tuple[float, float]]:
        t = self.target
        points: dict[str, tuple[float, float]] = {}
        for s, post in posts.items():
            spends = sorted(
                {c.curation_spend for c in candidates if c.source == s} | set(post.pool.spends)
            )
            if t.total_cost is not None:
                points[s] = self._best_split(post, spends)
                continue
            d = (
                t.train_tokens
                if t.train_tokens is not None
                else max([c.train_tokens for c in candidates] + [post.pool.train_tokens[1]])
            )
            c = t.curation_spend if t.curation_spend is not None else spends[-1]
            points[s] = (float(d), float(c))
        return points

    def _best_split(self, post: SourcePosterior, spends: Sequence[float]) -> tuple[float, float]:
        costs = self.costs
        if not isinstance(costs, PoolReuseCosts):
            raise AnalysisError("a total_cost target needs a PoolReuseCosts cost model")
        total = float(self.target.total_cost)  # type: ignore[arg-type]
        best = None
        for c in spends:
            d = (total - costs.curation_cost(post.source, c) - costs.train_fixed_usd) / (
                costs.usd_per_train_token
            )
            if d <= 0:
                continue
            v = float(post.log_point(d, c)[0])
            if best is None or v < best[0]:
                best = (v, d, c)
        if best is None:
            raise AnalysisError(
                f"target total cost ${total:,.4g} does not cover the smallest spend of "
                f"{post.source!r}"
            )
        return (best[1], best[2])

    def state(
        self, finished: pd.DataFrame, candidates: Sequence[CandidateCell] = ()
    ) -> DecisionState:
        """The decision the finished cells support now."""
        law, posts, sigma = self._posteriors(finished, candidates)
        return self._state(law, posts, sigma, finished, candidates)

    def _state(self, law, posts, sigma, finished, candidates) -> DecisionState:
        points = self._target_points(posts, candidates)
        draws = {s: posts[s].log_draws(*points[s])[:, 0] for s in posts}
        names = sorted(draws)
        p_best: dict[str, float] = {}
        if names:
            stack = np.stack([draws[s] for s in names])  # (S, B)
            win = np.bincount(np.argmin(stack, axis=0), minlength=len(names))
            p_best = {s: float(w) / stack.shape[1] for s, w in zip(names, win, strict=True)}
        predicted = {s: float(np.exp(posts[s].log_point(*points[s])[0])) for s in names}
        rec = max(names, key=lambda s: (p_best[s], -predicted[s])) if names else None
        sources = sorted(set(finished["source"].astype(str)) if len(finished) else set())
        sources = sorted(set(sources) | {c.source for c in candidates})
        return DecisionState(
            target=self.target,
            law=law.name,
            p_best=MappingProxyType(p_best),
            recommended=rec,
            predicted=MappingProxyType(predicted),
            log_sd=MappingProxyType({s: float(np.std(draws[s])) for s in names}),
            points=MappingProxyType(points),
            unfitted=tuple(s for s in sources if s not in posts),
            sigma=sigma,
        )

    # --- proposals --------------------------------------------------------------------

    def propose(
        self,
        finished: pd.DataFrame,
        candidates: Sequence[CandidateCell],
        *,
        n: int,
        pending: Sequence[CandidateCell] = (),
        done: Sequence[CandidateCell] = (),
    ) -> Proposal:
        """The next ``n`` cells, ranked, chosen jointly with ``pending`` fantasised.

        ``candidates`` are the cells that may be proposed; those in ``done`` (finished
        cells, as candidates, for cost accounting) or ``pending`` are never proposed.
        """
        if n < 1:
            raise AnalysisError(f"n must be at least 1; got {n}")
        s = self.settings
        taken = {c.name for c in (*pending, *done)}
        open_cells = [c for c in candidates if c.name not in taken]
        paid: list[CandidateCell] = [*done, *pending]
        law, posts, sigma = self._posteriors(finished, candidates)
        state = self._state(law, posts, sigma, finished, candidates)

        chosen: list[ProposedCell] = []
        seeds = seed_design(
            open_cells,
            finished,
            pending,
            self.costs,
            s.seed_points,
            pool=s.seed_pool,
            target_spend=self.target.curation_spend,
        )
        for cell in seeds:
            if len(chosen) == n:
                break
            cost = self.costs.marginal_cost(cell, paid)
            chosen.append(
                ProposedCell(
                    cell=cell,
                    rank=len(chosen) + 1,
                    reason="seed",
                    expected_gain=math.nan,
                    decision_gain=math.nan,
                    variance_gain=math.nan,
                    cost=cost,
                    score=math.nan,
                )
            )
            paid.append(cell)
        if len(chosen) < n and posts:
            picked = {c.cell.name for c in chosen}
            rest = [c for c in open_cells if c.name not in picked and c.source in posts]
            fantasised = [c for c in (*pending, *(p.cell for p in chosen)) if c.source in posts]
            chosen += self._greedy(state, posts, sigma, rest, fantasised, paid, n - len(chosen))
            chosen = [replace(c, rank=i + 1) for i, c in enumerate(chosen)]
        return Proposal(cells=tuple(chosen), state=state)

    def _greedy(
        self,
        state: DecisionState,
        posts: Mapping[str, SourcePosterior],
        sigma: float,
        rest: list[CandidateCell],
        fantasised: list[CandidateCell],
        paid: list[CandidateCell],
        n: int,
    ) -> list[ProposedCell]:
        s = self.settings
        names = sorted(posts)
        idx = {name: i for i, name in enumerate(names)}
        # Per source: covariance over [target, its candidate and fantasised cells].
        cells_of: dict[str, list[CandidateCell]] = {name: [] for name in names}
        for c in [*fantasised, *rest]:
            if c.name not in {x.name for x in cells_of[c.source]}:
                cells_of[c.source].append(c)
        covs, col = {}, {}
        for name in names:
            d_t, c_t = state.points[name]
            cs = cells_of[name]
            d = np.array([d_t] + [c.train_tokens for c in cs])
            c = np.array([c_t] + [x.curation_spend for x in cs])
            f = posts[name].log_draws(d, c)  # (B, 1 + m)
            covs[name] = np.atleast_2d(np.cov(f, rowvar=False))
            col[name] = {x.name: j + 1 for j, x in enumerate(cs)}
        noise = sigma**2
        mu = np.array([float(np.mean(posts[nm].log_draws(*state.points[nm]))) for nm in names])
        var0 = np.array([covs[nm][0, 0] for nm in names])
        if s.contention_weighted:
            p = np.array([state.p_best.get(nm, 0.0) for nm in names])
            weight = np.maximum(p ** (1.0 / s.contention_temperature), s.contention_floor)
        else:
            weight = np.ones(len(names))
        total_var = max(float((weight * var0).sum()), _TINY)
        reduce = np.zeros(len(names))

        def update(cell: CandidateCell) -> float:
            cov = covs[cell.source]
            j = col[cell.source][cell.name]
            v = cov[j, j] + noise
            r = cov[0, j] ** 2 / v
            covs[cell.source] = cov - np.outer(cov[:, j], cov[j, :]) / v
            return r

        for cell in fantasised:
            reduce[idx[cell.source]] += update(cell)
        z = self._z_outer[:, : len(names)]
        current = _expected_p_correct(mu, var0, reduce[None, :], z)[0]

        out: list[ProposedCell] = []
        pool = list(rest)
        ref = float(np.median([self.costs.standalone_cost(c) for c in pool])) if pool else 1.0
        for _ in range(n):
            if not pool:
                break
            r_new = np.zeros((len(pool), len(names)))
            for k, c in enumerate(pool):
                cov = covs[c.source]
                j = col[c.source][c.name]
                r_new[k, idx[c.source]] = cov[0, j] ** 2 / (cov[j, j] + noise)
            after = reduce[None, :] + r_new
            dec = (
                _expected_p_correct(mu, var0, after, z) - current
                if s.decision_weight > 0 and len(names) > 1
                else np.zeros(len(pool))
            )
            var_gain = (r_new * weight).sum(axis=1) / total_var
            gain = s.decision_weight * np.maximum(dec, 0.0) + s.variance_weight * var_gain
            cost = np.array([self.costs.marginal_cost(c, paid) for c in pool])
            score = gain / np.maximum(cost / max(ref, _TINY), 1e-9) ** s.cost_tempering
            k = int(np.argmax(score))
            c = pool.pop(k)
            out.append(
                ProposedCell(
                    cell=c,
                    rank=0,
                    reason="score",
                    expected_gain=float(gain[k]),
                    decision_gain=float(dec[k]),
                    variance_gain=float(var_gain[k]),
                    cost=float(cost[k]),
                    score=float(score[k]),
                )
            )
            reduce[idx[c.source]] += update(c)
            current = float(current + max(dec[k], 0.0))
            paid.append(c)
        return out


def _expected_p_correct(
    mu: np.ndarray, var: np.ndarray, reduce: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """Expected ``max_s P(s best)`` after observations that cut each source's target
    variance by ``reduce`` ``(C, S)``; ``mu, var`` ``(S,)`` on log metric; ``z`` ``(K, S)``
    fantasy normals. Returns ``(C,)``."""
    reduce = np.clip(reduce, 0.0, var[None, :] * (1 - 1e-9))
    shift = np.sqrt(reduce)  # (C, S)
    post_sd = np.sqrt(np.maximum(var[None, :] - reduce, _TINY))  # (C, S)
    means = mu[None, None, :] + z[None, :, :] * shift[:, None, :]  # (C, K, S)
    p = _p_best_gaussian(means, post_sd[:, None, :])  # (C, K, S)
    return p.max(axis=-1).mean(axis=-1)


def _p_best_gaussian(means: np.ndarray, sds: np.ndarray) -> np.ndarray:
    """``P(source s has the lowest value)`` for independent normals, by Gauss-Hermite
    quadrature; ``means (..., S)``, ``sds`` broadcastable. Returns ``(..., S)``."""
    sds = np.broadcast_to(sds, means.shape)
    t = means[..., :, None] + sds[..., :, None] * _GH_NODES  # (..., S, H): value of s
    # P(j > t) for every j: (..., S_s, H, S_j)
    above = 1.0 - ndtr((t[..., None] - means[..., None, None, :]) / sds[..., None, None, :])
    s_count = means.shape[-1]
    eye = np.eye(s_count, dtype=bool)[:, None, :]  # (S_s, 1, S_j)
    above = np.where(eye, 1.0, above)
    return np.einsum("...sh,h->...s", np.prod(above, axis=-1), _GH_WEIGHTS)


def seed_design(
    open_cells: Sequence[CandidateCell],
    finished: pd.DataFrame,
    pending: Sequence[CandidateCell],
    costs: CellCostModel,
    points: int = 3,
    *,
    pool: str = "middle",
    target_spend: float | None = None,
) -> list[CandidateCell]:
    """Cells each source still needs before its law can be fitted and trusted: on one
    pool, ``points`` token counts spread over at least a decade where the candidates
    allow. Sources that already have ``points`` distinct token counts (finished or
    pending) need none.

    ``pool="middle"`` seeds on the spend nearest the geometric middle between the
    source's cheapest spend and the target spend (``target_spend``, else its largest
    candidate spend): the pool size enters the law through repetition, and on the
    simulator (`analysis.simulate`) fits from the cheapest pool, where the anneal repeats
    its data many times, extrapolate to the target's pool much worse (decision accuracy
    0.80 vs 0.97 on 30 problems for the same three token counts), for a small extra
    curation cost. ``pool="cheapest"`` seeds on the cheapest pool."""
    have: dict[str, set[float]] = {}
    have_on_pool: dict[tuple[str, float], set[float]] = {}
    if len(finished):
        for (src, spend), rows in finished.groupby(["source", "curation_spend"]):
            tokens = set(rows["train_tokens"].astype(float))
            have.setdefault(str(src), set()).update(tokens)
            have_on_pool.setdefault((str(src), float(spend)), set()).update(tokens)
    for c in pending:
        have.setdefault(c.source, set()).add(float(c.train_tokens))
        have_on_pool.setdefault(c.pool, set()).add(float(c.train_tokens))
    out: list[CandidateCell] = []
    by_source: dict[str, list[CandidateCell]] = {}
    for c in open_cells:
        by_source.setdefault(c.source, []).append(c)
    for src in sorted(by_source):
        seen = have.get(src, set())
        if len(seen) >= points:
            continue
        cells = by_source[src]
        chosen = _seed_pool({c.pool for c in cells}, costs, pool, target_spend)
        on_pool = sorted((c for c in cells if c.pool == chosen), key=lambda c: c.train_tokens)
        # spread over the pool's whole token range, finished counts included, so a seed
        # design handed out over several batches still spans the decade
        ran = have_on_pool.get((src, chosen[1]), set())
        tokens = sorted({c.train_tokens for c in on_pool} | ran)
        wanted = _spread(tokens, points)
        for d in wanted:
            if len(seen) >= points:
                break
            if d in seen:
                continue
            match = [c for c in on_pool if c.train_tokens == d]
            if match:
                out.append(match[0])
                seen = seen | {d}
    # cheapest first across sources so a small batch seeds every source a little
    return sorted(out, key=lambda c: (c.train_tokens, c.source))


def _seed_pool(
    pools: set[tuple[str, float]], costs: CellCostModel, how: str, target_spend: float | None
) -> tuple[str, float]:
    cheapest = min(pools, key=lambda p: (costs.curation_cost(*p), p[1]))
    if how == "cheapest":
        return cheapest
    lo = cheapest[1]
    hi = target_spend if target_spend is not None else max(p[1] for p in pools)
    if lo <= 0 or hi <= 0:
        return cheapest
    goal = math.sqrt(lo * hi)
    return min(
        pools,
        key=lambda p: (
            abs(math.log(max(p[1], _TINY) / goal)),
            costs.curation_cost(*p),
            p[1],
        ),
    )


def _spread(tokens: Sequence[float], points: int) -> list[float]:
    """Up to ``points`` values of ``tokens``: the smallest, the smallest at least ten times
    it (else the largest), and values nearest the geometric steps between them."""
    lo = tokens[0]
    far = next((d for d in tokens if d >= 10 * lo), tokens[-1])
    picks = [lo, far]
    for k in range(1, points - 1):
        goal = lo * (far / lo) ** (k / (points - 1))
        free = [d for d in tokens if d not in picks]
        if free:
            picks.append(min(free, key=lambda d: abs(math.log(d / goal))))
    return sorted(set(picks))


# --- stop rule ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HeldOutCheck:
    source: str
    train_tokens: float
    observed: float
    predicted: float
    lower: float
    upper: float

    @property
    def inside(self) -> bool:
        return self.lower <= self.observed <= self.upper

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "train_tokens": self.train_tokens,
            "observed": self.observed,
            "predicted": self.predicted,
            "interval": [self.lower, self.upper],
            "inside": self.inside,
        }


@dataclass(frozen=True, kw_only=True)
class StopCheck:
    """Whether to stop, why, and what stopping saved."""

    stop: bool
    reason: str | None
    """``confident`` (decision probability reached the threshold and held-out checks
    pass), ``budget`` (the budget is spent), ``exhausted`` (no candidate left), or None."""
    recommended: str | None
    confidence: float
    threshold: float
    held_out: tuple[HeldOutCheck, ...]
    held_out_ok: bool
    spent: float
    budget: float | None
    grid_cost: float | None
    """What running every candidate would cost (USD)."""

    @property
    def saved(self) -> float | None:
        return None if self.grid_cost is None else self.grid_cost - self.spent

    @property
    def saved_fraction(self) -> float | None:
        if self.grid_cost is None or self.grid_cost <= 0:
            return None
        return 1.0 - self.spent / self.grid_cost

    def message(self) -> str:
        if self.reason == "confident":
            why = (
                f"P(best) of {self.recommended} reached {self.confidence:.0%} "
                f"(threshold {self.threshold:.0%}) and the held-out checks pass"
            )
        elif self.reason == "budget" and self.budget is not None and self.spent < self.budget:
            why = (
                f"the budget of ${self.budget:,.4g} is spent: no open cell fits in the "
                f"${self.budget - self.spent:,.4g} left"
            )
        elif self.reason == "budget":
            why = f"the budget of ${self.budget:,.4g} is spent"
        elif self.reason == "exhausted":
            why = "every candidate cell has run"
        else:
            why = "not stopped"
        text = f"Stopped: {why}." if self.stop else "Continuing."
        if self.saved is not None and self.grid_cost:
            text += (
                f" Spent ${self.spent:,.4g} of the full grid's ${self.grid_cost:,.4g}: saved "
                f"${self.saved:,.4g} ({self.saved_fraction:.0%})."
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "stop": self.stop,
            "reason": self.reason,
            "recommended": self.recommended,
            "confidence": self.confidence,
            "threshold": self.threshold,
            "held_out_ok": self.held_out_ok,
            "held_out": [h.to_dict() for h in self.held_out],
            "spent": self.spent,
            "budget": self.budget,
            "grid_cost": self.grid_cost,
            "saved": self.saved,
            "saved_fraction": self.saved_fraction,
            "message": self.message(),
        }


def held_out_checks(
    proposer: Proposer,
    finished: pd.DataFrame,
    candidates: Sequence[CandidateCell],
    sources: Iterable[str],
    level: float = 0.95,
) -> tuple[HeldOutCheck, ...]:
    """Per source: refit without its largest training-token count and predict it."""
    out = []
    z = float(_norm_ppf((1 + level) / 2))
    for src in sources:
        rows = finished[finished["source"] == src]
        if rows["train_tokens"].nunique() < 3:
            continue
        d_max = rows["train_tokens"].max()
        train = finished[(finished["source"] != src) | (finished["train_tokens"] < d_max)]
        law, posts, sigma = proposer._posteriors(train, candidates)
        post = posts.get(src)
        if post is None:
            continue
        held = rows[rows["train_tokens"] == d_max]
        for spend, cell in held.groupby("curation_spend"):
            ld = post.log_draws(float(d_max), float(spend))[:, 0]
            sd = math.sqrt(float(np.var(ld)) + sigma**2 / len(cell))
            m = float(np.mean(ld))
            out.append(
                HeldOutCheck(
                    source=src,
                    train_tokens=float(d_max),
                    observed=float(cell["domain_bpb"].mean()),
                    predicted=math.exp(m),
                    lower=math.exp(m - z * sd),
                    upper=math.exp(m + z * sd),
                )
            )
    return tuple(out)


def _norm_ppf(p: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(p))


def stop_check(
    proposer: Proposer,
    finished: pd.DataFrame,
    candidates: Sequence[CandidateCell],
    *,
    spent: float,
    threshold: float = 0.9,
    budget: float | None = None,
    grid_cost: float | None = None,
    remaining: int | None = None,
    affordable: int | None = None,
    state: DecisionState | None = None,
) -> StopCheck:
    """The stop rule: stop when the recommendation's probability reaches ``threshold`` and
    every source's held-out check passes (each must be checkable: three token counts or
    more), when the budget is spent (``spent >= budget``, or none of the
    ``remaining`` open cells is ``affordable`` in what is left of it), or when no
    candidate is left.

    Every source, not only the contenders: a source is ruled out only by a fit that has
    predicted a cell it did not see. On the demo, a stop that checked the contenders alone
    ended after seven cells, before two sources had their third seed cell, at P(best) 95 %
    for a source the full grid does not pick; those two sources' two-cell fits rested on
    the prior."""
    if not 0.0 < threshold < 1.0:
        raise AnalysisError(f"stop threshold must lie in (0, 1); got {threshold}")
    st = state or proposer.state(finished, candidates)
    checks: tuple[HeldOutCheck, ...] = ()
    ok = False
    confident = st.recommended is not None and st.confidence >= threshold and not st.unfitted
    if confident:
        checks = held_out_checks(proposer, finished, candidates, sorted(st.p_best))
        ok = {c.source for c in checks} >= set(st.p_best) and all(c.inside for c in checks)
    reason = None
    if confident and ok:
        reason = "confident"
    elif budget is not None and (spent >= budget or (affordable == 0 and remaining != 0)):
        reason = "budget"
    elif remaining == 0:
        reason = "exhausted"
    return StopCheck(
        stop=reason is not None,
        reason=reason,
        recommended=st.recommended,
        confidence=st.confidence,
        threshold=threshold,
        held_out=checks,
        held_out_ok=ok,
        spent=spent,
        budget=budget,
        grid_cost=grid_cost,
    )


def candidates_from_table(table: pd.DataFrame) -> list[CandidateCell]:
    """One `CandidateCell` per distinct (source, spend, tokens) of a results table."""
    cols = ["source", "curation_spend", "train_tokens"]
    extra = "unique_tokens" in table.columns
    out = []
    for key, rows in table.groupby(cols, sort=True):
        src, spend, tokens = key
        u = float(rows["unique_tokens"].mean()) if extra else None
        out.append(
            CandidateCell(
                source=str(src),
                curation_spend=float(spend),
                train_tokens=float(tokens),
                unique_tokens=u if u is None or math.isfinite(u) else None,
            )
        )
    return out


@dataclass
class _LRU(MutableMapping):
    """A small least-recently-used dict for fits."""

    capacity: int
    _data: dict = field(default_factory=dict)

    def __getitem__(self, k):
        v = self._data.pop(k)
        self._data[k] = v
        return v

    def __setitem__(self, k, v):
        self._data.pop(k, None)
        self._data[k] = v
        while len(self._data) > self.capacity:
            self._data.pop(next(iter(self._data)))

    def __delitem__(self, k):
        del self._data[k]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)
