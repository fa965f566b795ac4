"""A simulator of data sources with known true laws, for testing and benchmarking designs.

Each simulated source follows the curation-aware law of `analysis.laws.effective_data_law`
with its own parameters: a pool of ``U(c) = tokens_per_usd * c`` unique tokens at
curation spend ``c``, repetition with half-life ``R_star``, and a relative (log-normal)
noise per cell. Three archetypes mirror the demo's sources:

- ``diverse`` (a filtered web crawl): steep (large ``beta``), large pools, weak start;
- ``narrow`` (synthetic text): strong start (small ``B``), shallow, repeats itself
  (small ``R_star``): it leads at small budgets and is often overtaken;
- ``curated`` (a licensed corpus): in between, dearer per token.

So a problem's ranking at the cheapest cells often differs from the ranking at the
target (a flip). Costs: curation spend is paid once per pool, training is paid per
token (`PoolReuseCosts`). The target is four times the largest sampled training
tokens, at the largest spend.

Grids (`GRIDS`, ``make_problem(seed, grid=...)``): every source has three spends (1x, 3x,
9x its base spend) and one cell per spend and training-token count.

- ``narrow`` (the default): 1e6 ... 1.6e7 tokens, five counts over 1.2 decades, 45
  cells, $79.2; target 6.4e7 tokens. A seed design of cheap cells over a decade
  (`analysis.propose.seed_design`) already holds the most expensive count and costs
  0.2 of the grid. Seeds 0-199: the ranking flips in 75 %, the true best is diverse /
  curated / narrow in 44 / 41 / 16 %.
- ``wide``: 1e6 ... 1e8 tokens, seven counts over two decades (factor ~2.15), 63 cells,
  about $358; target 4e8 tokens, where every pool is repeated ten epochs or more. Real
  scaling-law sweeps span two decades or more of training tokens (Li et al. 2026, "Spend
  Less, Fit Better"); the seed's decade is then the cheap end of the grid (0.04 of its
  compute). Seeds 0-199: the ranking flips in 92 %, the true best is diverse / curated /
  narrow in 70 / 29 / 2 % (the narrow source's small pools run out long before 4e8
  tokens). The full grid's own decision accuracy is 0.98 on seeds 0-49 and 1000-1049
  with the proposer's law prior (0.96 on seeds 0-49 without it), as on the narrow grid.

`run_policy` plays a design (the proposer, a baseline, or the full grid) on a problem
and records, after every batch, the compute spent and the recommendation.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from annealscale.analysis.laws import effective_data_law
from annealscale.analysis.propose import Proposer, ProposerSettings
from annealscale.analysis.propose_costs import CandidateCell, PoolReuseCosts
from annealscale.analysis.target import Target

TRAIN_TOKENS: tuple[float, ...] = (1e6, 2e6, 4e6, 8e6, 1.6e7)
"""The ``narrow`` grid's training-token counts: five counts over 1.2 decades."""
WIDE_TRAIN_TOKENS: tuple[float, ...] = (1e6, 2.15e6, 4.64e6, 1e7, 2.15e7, 4.64e7, 1e8)
"""The ``wide`` grid's training-token counts: seven counts over two decades (factor
~2.15), the span of real scaling-law sweeps."""
GRIDS: dict[str, tuple[float, ...]] = {"narrow": TRAIN_TOKENS, "wide": WIDE_TRAIN_TOKENS}
SPEND_STEPS: tuple[float, ...] = (1.0, 3.0, 9.0)
"""Spends as multiples of each source's base spend."""
TARGET_FACTOR = 4.0
USD_PER_TRAIN_TOKEN = 2e-7
DOMAIN_FRACTION = 0.5


@dataclass(frozen=True, kw_only=True)
class SimSource:
    name: str
    E: float
    B: float
    beta: float
    R_star: float
    tokens_per_usd: float
    """Unique tokens curated per USD of spend."""
    base_spend: float
    """Smallest spend on the grid (USD)."""

    def unique_tokens(self, spend: float) -> float:
        return self.tokens_per_usd * spend

    def metric(self, spend: float, train_tokens) -> np.ndarray:
        d = np.asarray(train_tokens, float)
        return effective_data_law(
            DOMAIN_FRACTION * d,
            self.unique_tokens(spend),
            E=self.E,
            B=self.B,
            beta=self.beta,
            R_star=self.R_star,
        )


@dataclass(frozen=True, kw_only=True)
class SimProblem:
    sources: tuple[SimSource, ...]
    noise: float
    """Relative noise of one cell (sd of log bpb)."""
    seed: int
    train_tokens: tuple[float, ...] = TRAIN_TOKENS
    """The candidate training-token counts of every pool (`GRIDS`)."""

    @property
    def costs(self) -> PoolReuseCosts:
        return PoolReuseCosts(usd_per_train_token=USD_PER_TRAIN_TOKEN)

    @property
    def target(self) -> Target:
        return Target(
            train_tokens=TARGET_FACTOR * self.train_tokens[-1],
            curation_spend=None,  # each source at its largest spend
        )

    def target_point(self, source: SimSource) -> tuple[float, float]:
        return TARGET_FACTOR * self.train_tokens[-1], source.base_spend * SPEND_STEPS[-1]

    def true_at_target(self) -> dict[str, float]:
        return {s.name: float(s.metric(*self.target_point(s)[::-1])) for s in self.sources}

    def true_best(self) -> str:
        t = self.true_at_target()
        return min(t, key=t.get)

    def flips(self) -> bool:
        """Whether the best source at the cheapest cells differs from the best at the target."""
        small = {s.name: float(s.metric(s.base_spend, self.train_tokens[0])) for s in self.sources}
        return min(small, key=small.get) != self.true_best()

    def candidates(self) -> list[CandidateCell]:
        return [
            CandidateCell(
                source=s.name,
                curation_spend=s.base_spend * k,
                train_tokens=d,
                unique_tokens=s.unique_tokens(s.base_spend * k),
            )
            for s in self.sources
            for k in SPEND_STEPS
            for d in self.train_tokens
        ]

    def grid_cost(self) -> float:
        return self.costs.spent(self.candidates())

    def observe(self, cells: Sequence[CandidateCell]) -> pd.DataFrame:
        """Rows of a results table for ``cells``. The noise of a cell is fixed by the
        problem's seed and the cell, so every design sees the same value for the same cell."""
        by_name = {s.name: s for s in self.sources}
        rows = []
        for c in cells:
            s = by_name[c.source]
            true = float(s.metric(c.curation_spend, c.train_tokens))
            k = [self.seed, zlib.crc32(c.name.encode())]
            z = float(np.random.default_rng(k).standard_normal())
            cost = self.costs
            rows.append(
                {
                    "source": c.source,
                    "curation_spend": c.curation_spend,
                    "train_tokens": c.train_tokens,
                    "unique_tokens": s.unique_tokens(c.curation_spend),
                    "domain_tokens": DOMAIN_FRACTION * c.train_tokens,
                    "domain_bpb": true * math.exp(self.noise * z),
                    "seed": 0,
                    "status": "finished",
                    "curation_cost": cost.curation_cost(*c.pool),
                    "train_cost": cost.train_cost(c),
                }
            )
        return pd.DataFrame(rows)


def make_problem(seed: int, *, min_margin: float = 0.01, grid: str = "narrow") -> SimProblem:
    """A random three-source problem whose best and second-best sources at the target differ
    by at least ``min_margin`` (relative): the decision is decidable by the full grid.
    ``grid`` names the candidate training-token counts (`GRIDS`); the target is four times
    the grid's largest count."""
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; choose from {', '.join(GRIDS)}")
    tokens = GRIDS[grid]
    rng = np.random.default_rng([seed, 7])
    while True:
        e = rng.uniform(0.9, 1.1)
        sources = (
            SimSource(
                name="diverse",
                E=e * rng.uniform(0.97, 1.03),
                B=rng.uniform(0.9, 1.4),
                beta=rng.uniform(0.3, 0.5),
                R_star=rng.uniform(10, 30),
                tokens_per_usd=rng.uniform(2e6, 4e6),
                base_spend=0.5,
            ),
            SimSource(
                name="narrow",
                E=e * rng.uniform(0.97, 1.03),
                B=rng.uniform(0.5, 0.9),
                beta=rng.uniform(0.1, 0.3),
                R_star=rng.uniform(1.5, 6),
                tokens_per_usd=rng.uniform(3e6, 6e6),
                base_spend=0.3,
            ),
            SimSource(
                name="curated",
                E=e * rng.uniform(0.97, 1.03),
                B=rng.uniform(0.6, 1.1),
                beta=rng.uniform(0.2, 0.4),
                R_star=rng.uniform(5, 20),
                tokens_per_usd=rng.uniform(0.8e6, 1.5e6),
                base_spend=1.0,
            ),
        )
        p = SimProblem(
            sources=sources,
            noise=float(rng.uniform(0.003, 0.01)),
            seed=seed,
            train_tokens=tokens,
        )
        vals = sorted(p.true_at_target().values())
        if vals[1] / vals[0] - 1.0 >= min_margin:
            return p


@dataclass(frozen=True, kw_only=True)
class Step:
    """The state after one batch of a design."""

    spent: float
    n_cells: int
    recommended: str | None
    confidence: float
    target_error: float
    """Mean over sources of ``|predicted / true - 1|`` at the target (1 for an unfitted
    source)."""


POLICIES = ("adaptive", "variance_only", "random", "cheapest_first", "grid")


def run_policy(
    problem: SimProblem,
    policy: str,
    *,
    q: int = 3,
    max_fraction: float = 1.0,
    seed: int = 0,
    settings: ProposerSettings | None = None,
) -> list[Step]:
    """Play ``policy`` on ``problem`` in batches of ``q`` until it has spent
    ``max_fraction`` of the full grid's compute or run every cell."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose from {POLICIES}")
    rng = np.random.default_rng([problem.seed, seed, POLICIES.index(policy)])
    costs = problem.costs
    cands = problem.candidates()
    base = settings or ProposerSettings()
    if policy == "variance_only":
        from dataclasses import replace

        base = replace(base, decision_weight=0.0, variance_weight=1.0, contention_weighted=False)
    proposer = Proposer(target=problem.target, costs=costs, settings=base)
    grid_cost = problem.grid_cost()
    truth = problem.true_at_target()

    order: list[CandidateCell] | None = None
    if policy == "random":
        order = [cands[i] for i in rng.permutation(len(cands))]
    elif policy == "cheapest_first":
        order = sorted(cands, key=lambda c: (costs.standalone_cost(c), c.source))
    elif policy == "grid":
        order = list(cands)

    done: list[CandidateCell] = []
    table = pd.DataFrame()
    steps: list[Step] = []
    batch_q = len(cands) if policy == "grid" else q
    adaptive = policy in ("adaptive", "variance_only")
    proposal = None
    while True:
        if adaptive and len(done) < len(cands):
            proposal = proposer.propose(table, cands, n=q, done=done)
        if done:  # record the state the finished cells support
            st = proposal.state if adaptive and proposal is not None else None
            if st is None or len(done) == len(cands):
                st = proposer.state(table, cands)
            err = [
                abs(st.predicted[s] / truth[s] - 1.0) if s in st.predicted else 1.0 for s in truth
            ]
            spent = costs.spent(done)
            steps.append(
                Step(
                    spent=spent / grid_cost,
                    n_cells=len(done),
                    recommended=st.recommended,
                    confidence=st.confidence,
                    target_error=float(np.mean(err)),
                )
            )
            if spent >= max_fraction * grid_cost:
                break
        if len(done) == len(cands):
            break
        if adaptive:
            assert proposal is not None
            batch = [p.cell for p in proposal.cells]
        else:
            assert order is not None
            batch = order[len(done) : len(done) + batch_q]
        if not batch:
            break
        new = problem.observe(batch)
        table = pd.concat([table, new], ignore_index=True) if len(table) else new
        done += batch
    return steps


def at_fraction(steps: Sequence[Step], fraction: float) -> Step | None:
    """The last state with at most ``fraction`` of the grid's compute spent."""
    best = None
    for s in steps:
        if s.spent <= fraction + 1e-9:
            best = s
    return best


TASK_TRAIN_TOKENS: tuple[float, ...] = (1e6, 2e6, 4e6, 8e6, 1.6e7)
"""Training-token counts of a `TaskProblem`'s grid; its target is `TASK_TARGET_FACTOR`
times the largest."""
TASK_TARGET_FACTOR = 10.0


@dataclass(frozen=True, kw_only=True)
class TaskSource:
    """A source whose task loss follows ``E + B (D / 1e6) ** -beta`` (bits per byte)."""

    name: str
    E: float
    B: float
    beta: float

    def loss(self, train_tokens) -> np.ndarray:
        return self.E + self.B * (np.asarray(train_tokens, float) / 1e6) ** -self.beta


@dataclass(frozen=True, kw_only=True)
class TaskProblem:
    """Sources on one multiple-choice task: accuracy is a sigmoid link of the task loss
    (``floor`` the chance level), measured on ``questions`` questions (binomial noise);
    the loss carries a relative noise per cell (a seed's model), and the accuracy is that
    model's (the link at the cell's own loss)."""

    sources: tuple[TaskSource, ...]
    link: tuple[float, float, float, float]
    """True (floor, ceiling, mid, scale)."""
    questions: int
    noise: float
    """Relative noise of a cell's task loss (sd of log bpb)."""
    seed: int
    seeds: int = 2
    task: str = "sim"
    train_tokens: tuple[float, ...] = TASK_TRAIN_TOKENS

    @property
    def target_tokens(self) -> float:
        return TASK_TARGET_FACTOR * self.train_tokens[-1]

    def accuracy(self, loss) -> np.ndarray:
        from annealscale.analysis.link import sigmoid_link

        return sigmoid_link(loss, self.link)

    def true_at_target(self) -> dict[str, float]:
        """Expected accuracy of each source at the target."""
        return {s.name: float(self.accuracy(s.loss(self.target_tokens))) for s in self.sources}

    def true_best(self) -> str:
        t = self.true_at_target()
        return max(t, key=t.get)

    def table(self) -> pd.DataFrame:
        """A results table: one row per (source, training tokens, seed), with
        ``task/<task>/bpb``, ``task/<task>/acc`` and its lm-eval stderr, and a
        ``domain_bpb`` that tracks the task loss."""
        rng = np.random.default_rng([self.seed, 23])
        rows = []
        pre = f"task/{self.task}"
        for s in self.sources:
            for d in self.train_tokens:
                for k in range(self.seeds):
                    loss = float(s.loss(d)) * math.exp(self.noise * rng.standard_normal())
                    acc = rng.binomial(self.questions, float(self.accuracy(loss))) / self.questions
                    rows.append(
                        {
                            "source": s.name,
                            "curation_spend": 1.0,
                            "train_tokens": d,
                            "seed": k,
                            "status": "finished",
                            "domain_bpb": 0.9 * loss,
                            f"{pre}/bpb": loss,
                            f"{pre}/acc": acc,
                            f"{pre}/acc_stderr": math.sqrt(acc * (1 - acc) / (self.questions - 1)),
                        }
                    )
        return pd.DataFrame(rows)


def make_task_problem(seed: int, *, min_gap: float = 0.01) -> TaskProblem:
    """A random two- or three-source task problem whose best source at the target leads
    the runner-up by at least ``min_gap`` of accuracy. The link puts the sampled cells on
    the lower half of the sigmoid and the target further up, where a power law in
    accuracy would be wrong; 200-1000 questions; four choices (floor 0.25)."""
    rng = np.random.default_rng([seed, 11])
    while True:
        n_src = int(rng.integers(2, 4))
        e = rng.uniform(0.6, 1.0)
        sources = tuple(
            TaskSource(
                name=f"s{i}",
                E=e * rng.uniform(0.9, 1.1),
                B=rng.uniform(0.6, 1.4),
                beta=rng.uniform(0.2, 0.5),
            )
            for i in range(n_src)
        )
        sampled = np.array([s.loss(d) for s in sources for d in TASK_TRAIN_TOKENS])
        at_target = np.array([s.loss(TASK_TARGET_FACTOR * TASK_TRAIN_TOKENS[-1]) for s in sources])
        lo, hi = float(at_target.min()), float(sampled.max())
        mid = rng.uniform(lo, float(np.median(sampled)))
        link = (0.25, rng.uniform(0.8, 0.95), mid, (hi - lo) * rng.uniform(0.2, 0.45))
        p = TaskProblem(
            sources=sources,
            link=link,
            questions=int(rng.integers(200, 1001)),
            noise=float(rng.uniform(0.003, 0.01)),
            seed=seed,
        )
        vals = sorted(p.true_at_target().values(), reverse=True)
        if vals[0] - vals[1] >= min_gap:
            return p
