"""Decisions at a target budget: predictions with intervals, the probability that each
source is best, crossovers, the micro-annealing check, and the headline.

Probabilities come from the bootstrap: each source's resamples are drawn
independently (its own cells, its own seed), so pairing resample ``b`` of every
source is a draw from the joint distribution of the predictions, and
``p_best[s]`` is the share of draws in which ``s`` predicts the lowest metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from annealscale.analysis.budget import Allocation, CostModel, Frontier, allocate
from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.headline import format_probability, headline
from annealscale.analysis.objective import BPB, Objective
from annealscale.analysis.sources import SourceFits
from annealscale.analysis.target import Target, format_tokens

CROSSOVER_GRID = 160
"""Points of the log grid on which pairwise crossovers are searched."""
CROSSOVER_REACH = 10.0
"""Crossovers are searched up to this factor beyond the target or the largest sample."""
POSSIBLE_CROSSOVER = 0.2
"""A crossover absent from the point estimate is reported when at least this share of
resamples has one."""


@dataclass(frozen=True, kw_only=True)
class DecisionRule:
    """When the evidence is strong enough to say "buy".

    The leader must be the best source in at least ``threshold`` of the draws, and
    predicted ahead of the runner-up by more than a practical margin: ``margin_pct``
    percent of its metric, or ``margin_bpb`` in the metric's units when that is given.
    """

    threshold: float = 0.9
    """Least P(best) of the leader."""
    margin_pct: float = 0.5
    """Least predicted gap to the runner-up, percent of the leader's metric."""
    margin_bpb: float | None = None
    """Least predicted gap in the metric's units; replaces ``margin_pct`` when given."""

    def __post_init__(self) -> None:
        if not 0.5 <= self.threshold < 1.0:
            raise AnalysisError(
                f"threshold (--threshold) must lie in [0.5, 1), e.g. 0.9; got {self.threshold}"
            )
        if not self.margin_pct >= 0 or (self.margin_bpb is not None and not self.margin_bpb >= 0):
            raise AnalysisError(
                "the decision margin (--margin) must be non-negative, e.g. '0.5%' or '0.01'"
            )

    def margin(self, leader_metric: float) -> float:
        """The margin in the metric's units."""
        if self.margin_bpb is not None:
            return self.margin_bpb
        return self.margin_pct / 100.0 * abs(leader_metric)

    def describe(self, unit: str = "bpb") -> str:
        """The rule in words; ``unit`` names the metric's units (`Objective.unit`)."""
        m = (
            f"{self.margin_bpb:g}{' ' + unit if unit else ''}"
            if self.margin_bpb is not None
            else f"{self.margin_pct:g}%"
        )
        return f"P(best) >= {self.threshold:.0%} and a predicted gap above {m}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "margin_pct": None if self.margin_bpb is not None else self.margin_pct,
            "margin_bpb": self.margin_bpb,
        }


NO_COST_TARGET = (
    "target_cost (--target-cost) cannot be answered: the table has no cost columns "
    "(total_cost, or curation_cost and train_cost); add them or drop the cost target"
)
OUTCOMES = ("buy", "not_separated", "unchecked", "single", "none")
"""``buy``: the evidence meets the rule; ``not_separated``: it does not yet; ``unchecked``:
the grid is too small to check its own law, so no decision is claimed; ``single``: one
source could be ranked; ``none``: no source could."""
MIN_TOKEN_COUNTS = 3
"""Distinct training-token counts a source needs before its curve in tokens (offset,
amplitude, exponent) is more than a line through its points."""


@dataclass(frozen=True, kw_only=True)
class SourcePrediction:
    """One source's predicted metric at a target."""

    source: str
    train_tokens: float
    curation_spend: float
    predicted: float
    """The chosen law's point prediction (the centre the draws are built around)."""
    lower: float
    upper: float
    """Interval of the expected metric: fit, extrapolation and law uncertainty."""
    extrapolated: bool
    total_cost: float | None = None
    reach: Mapping[str, float] = field(default_factory=dict)
    """Extrapolation factor (>= 1) per budget variable beyond the source's sampled range."""
    spend_modelled: bool = True
    """False when the law has no spend term (the prediction pools every spend)."""

    @property
    def max_reach(self) -> float:
        return max(self.reach.values(), default=1.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_tokens": self.train_tokens,
            "curation_spend": self.curation_spend if self.spend_modelled else None,
            "total_cost": self.total_cost,
            "predicted": self.predicted,
            "interval": [self.lower, self.upper],
            "extrapolated": self.extrapolated,
            "extrapolation_factor": dict(self.reach),
        }


@dataclass(frozen=True, kw_only=True)
class Crossover:
    """A budget where two sources' predicted curves cross (the ranking flips)."""

    axis: str
    """``train_tokens`` or ``total_cost``."""
    before: str
    """The source ahead (lower metric) below the crossover."""
    after: str
    """The source ahead above it."""
    at: float
    lower: float
    upper: float
    """Percentile interval of the crossover over resamples that cross near it."""
    probability: float
    """Share of resamples whose curves cross within the searched range."""
    point_estimate: bool
    """False for a crossover seen only in resamples (``probability`` says how often)."""
    before_target: bool
    """Whether it lies between the cheapest sampled budget and the target."""

    def describe(self) -> str:
        unit = "training tokens" if self.axis == "train_tokens" else "total cost"
        where = _fmt_budget(self.axis, self.at)
        span = f"{_fmt_budget(self.axis, self.lower)}-{_fmt_budget(self.axis, self.upper)}"
        head = "" if self.point_estimate else "possible crossover: "
        return (
            f"{head}{self.after} overtakes {self.before} at {where} {unit} "
            f"(interval {span}; crossing in {format_probability(self.probability)} of draws)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "axis": self.axis,
            "before": self.before,
            "after": self.after,
            "at": self.at,
            "interval": [self.lower, self.upper],
            "probability": self.probability,
            "point_estimate": self.point_estimate,
            "between_cheapest_and_target": self.before_target,
            "text": self.describe(),
        }


@dataclass(frozen=True, kw_only=True)
class MicroAnnealing:
    """The usual practice: rank sources by their cheapest sampled cell."""

    cells: Mapping[str, Mapping[str, float]]
    """Per source: the cheapest cell's ``curation_spend``, ``train_tokens``, observed
    ``domain_bpb`` (seeds averaged) and ``total_cost`` when known."""
    ranking: tuple[str, ...]
    pick: str | None
    ranking_differs: bool
    """Whether the order differs from the order at the target."""
    pick_differs: bool
    """Whether micro-annealing picks another source than the recommendation."""

    @property
    def wrong_at_target(self) -> bool:
        return self.ranking_differs

    def to_dict(self) -> dict[str, Any]:
        return {
            "cells": {s: dict(c) for s, c in self.cells.items()},
            "ranking": list(self.ranking),
            "pick": self.pick,
            "ranking_differs_at_target": self.ranking_differs,
            "pick_differs_at_target": self.pick_differs,
        }


@dataclass(frozen=True, kw_only=True)
class TargetDecision:
    """Everything decided at one target: the one object the headline, the decision table,
    the budget split, the CLI, fits.json and `annealscale propose` all read."""

    target: Target
    predictions: Mapping[str, SourcePrediction]
    ranking: tuple[str, ...]
    """Sources by predicted metric, best first."""
    p_best: Mapping[str, float]
    """Probability that each source has the lowest expected metric at the target."""
    recommended: str | None
    """The leader: the source with the lowest predicted metric. Whether the evidence
    supports buying it is ``outcome``."""
    micro_annealing: MicroAnnealing | None
    crossovers: tuple[Crossover, ...]
    allocation: Allocation | None
    unranked: Mapping[str, str]
    """Source -> why it has no prediction."""
    level: float
    outcome: str = "none"
    """One of `OUTCOMES`."""
    rule: DecisionRule = DecisionRule()
    runner_up: str | None = None
    gap: float | None = None
    """Predicted metric of the runner-up minus the leader's (positive: the leader is ahead)."""
    gap_interval: tuple[float, float] | None = None
    small_grid: str | None = None
    """Why the grid is too small to check its own law (None when it is not)."""
    next_cells: tuple[Mapping[str, Any], ...] = ()
    """The proposer's top cells for this target (expected gain and cost), best first."""
    notes: tuple[str, ...] = ()
    curves: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Along the crossover axis: ``grid`` and per source ``predicted``/``lower``/``upper``."""
    objective: Objective = BPB
    """The metric ranked and which way is better."""

    @property
    def buy(self) -> bool:
        return self.outcome == "buy"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.to_dict(),
            "level": self.level,
            "outcome": self.outcome,
            "recommended": self.recommended,
            "buy": self.recommended if self.buy else None,
            "rule": self.rule.to_dict(),
            "runner_up": self.runner_up,
            "gap": self.gap,
            "gap_interval": None if self.gap_interval is None else list(self.gap_interval),
            "small_grid": self.small_grid,
            "p_best": dict(self.p_best),
            "ranking": list(self.ranking),
            "predictions": {s: p.to_dict() for s, p in self.predictions.items()},
            "micro_annealing": None
            if self.micro_annealing is None
            else self.micro_annealing.to_dict(),
            "crossovers": [c.to_dict() for c in self.crossovers],
            "allocation": None if self.allocation is None else self.allocation.to_dict(),
            "next_cells": [dict(c) for c in self.next_cells],
            "unranked": dict(self.unranked),
            "notes": list(self.notes),
        }


def decide_target(
    target: Target,
    fits: Mapping[str, SourceFits],
    cells: pd.DataFrame,
    *,
    costs: CostModel | None,
    frontier: Frontier | None,
    level: float,
    rule: DecisionRule | None = None,
    checked: bool = True,
    checked_variables: frozenset[str] | None = None,
    objective: Objective = BPB,
) -> TargetDecision:
    """Predict every source at ``target``, rank them, say whether the evidence decides,
    and find crossovers and flips. ``objective`` says which metric ``fits`` predict and
    whether higher is better.

    ``checked`` is whether the law could be checked on held-out budgets at all, and
    ``checked_variables`` the variables its folds rolled along
    (`analysis.validate.Validation.checked`, ``.checked_variables``); None skips the
    per-variable check.

    Raises
    ------
    AnalysisError
        When the target asks what the table cannot answer: a total cost without cost
        columns, or a curation spend when the law has no spend term.
    """
    rule = rule or DecisionRule()
    notes: list[str] = []
    unranked = {
        s: sf.pooled.error or "no fit" for s, sf in fits.items() if sf.pooled.result is None
    }
    ranked = {s: sf for s, sf in fits.items() if sf.pooled.result is not None}
    if target.total_cost is not None and costs is None:
        raise AnalysisError(NO_COST_TARGET)
    if target.curation_spend is not None and not all(sf.uses_spend() for sf in ranked.values()):
        law = next(iter(ranked.values())).law if ranked else None
        raise AnalysisError(
            f"target_spend (--target-spend) cannot be answered: the law "
            f"{law.name if law else ''!r} has no curation-spend term; choose a law with "
            "one (effective_data needs the unique_tokens and domain_tokens columns)"
        )

    points: dict[str, tuple[float, float]] = {}  # source -> (D, c)
    allocation = None
    if target.total_cost is not None:
        assert costs is not None
        allocation = allocate(ranked, costs, target.total_cost)
        for s in list(ranked):
            sp = allocation.splits.get(s)
            if sp is None:
                unranked[s] = f"${target.total_cost:,.4g} does not cover its smallest spend"
                del ranked[s]
            else:
                points[s] = (sp.train_tokens, sp.curation_spend)
    else:
        d_all = float(cells["train_tokens"].max())
        if target.train_tokens is None:
            notes.append(
                f"no training tokens given: every source at the largest sampled count "
                f"({format_tokens(d_all)})"
            )
        if target.curation_spend is None and any(sf.uses_spend() for sf in ranked.values()):
            notes.append("no curation spend given: every source at its largest sampled spend")
        for s, sf in ranked.items():
            d = target.train_tokens if target.train_tokens is not None else d_all
            c = target.curation_spend if target.curation_spend is not None else sf.pool.spends[-1]
            points[s] = (float(d), float(c))

    predictions: dict[str, SourcePrediction] = {}
    draws: dict[str, np.ndarray] = {}
    q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    for s, sf in ranked.items():
        d, c = points[s]
        point = float(sf.predict(d, c)[0])
        dr = sf.draws(d, c)[:, 0]  # (B,)
        lo, hi = np.nanquantile(dr, q) if np.isfinite(dr).any() else (point, point)
        predictions[s] = SourcePrediction(
            source=s,
            train_tokens=d,
            curation_spend=c,
            predicted=point,
            lower=float(min(lo, point)),
            upper=float(max(hi, point)),
            extrapolated=sf.extrapolated(d, c),
            total_cost=None if costs is None else float(costs.total_cost(s, c, d)),
            reach=MappingProxyType({v: float(f[0]) for v, f in sf.reach(d, c).items()}),
            spend_modelled=sf.uses_spend(),
        )
        draws[s] = dr
    small = small_grid(ranked, checked, predictions, checked_variables)
    for s, sf in ranked.items():
        res = sf.pooled.result
        if res is not None and {"underdetermined", "too_few_points"} & set(res.flags):
            notes.append(
                f"{s}: {res.n_distinct_x} distinct cell value(s) for {res.law.n_params} "
                "parameters; its interval shows only the spread of curves that fit them, not "
                "the noise it cannot estimate"
            )
    ranking = tuple(
        sorted(predictions, key=lambda s: (float(objective.key(predictions[s].predicted)), s))
    )
    p_best = probability_best(draws, objective)
    leader = ranking[0] if ranking else None
    runner = ranking[1] if len(ranking) > 1 else None
    gap = gap_iv = None
    if leader is not None and runner is not None:
        gap = float(objective.ahead(predictions[leader].predicted, predictions[runner].predicted))
        diff = objective.ahead(draws[leader], draws[runner])
        lo, hi = np.nanquantile(diff, q) if np.isfinite(diff).any() else (gap, gap)
        gap_iv = (float(min(lo, gap)), float(max(hi, gap)))
    outcome = _outcome(predictions, p_best, leader, gap, small, rule)
    micro = micro_annealing(
        cells, ranking, leader, by_cost=target.total_cost is not None, objective=objective
    )

    curves: dict[str, Any] = {}
    crossovers: tuple[Crossover, ...] = ()
    if len(ranked) >= 2:
        grid, pts, drs = _axis_curves(target, ranked, points, cells, frontier)
        micro_budget = _micro_budget(target, cells)
        target_budget = (
            target.total_cost if target.total_cost is not None else points[ranking[0]][0]
        )
        crossovers = find_crossovers(
            target.axis,
            grid,
            pts,
            drs,
            level=level,
            span=(micro_budget, target_budget),
            objective=objective,
        )
        curves = {
            "axis": target.axis,
            "grid": grid,
            "predicted": pts,
            "draws_interval": {s: _band(dr, q) for s, dr in drs.items()},
        }
    return TargetDecision(
        target=target,
        predictions=MappingProxyType(predictions),
        ranking=ranking,
        p_best=MappingProxyType(p_best),
        recommended=leader,
        micro_annealing=micro,
        crossovers=crossovers,
        allocation=allocation,
        unranked=MappingProxyType(unranked),
        level=level,
        outcome=outcome,
        rule=rule,
        runner_up=runner,
        gap=gap,
        gap_interval=gap_iv,
        small_grid=small,
        notes=tuple(notes),
        curves=curves,
        objective=objective,
    )


def small_grid(
    fits: Mapping[str, SourceFits],
    checked: bool,
    predictions: Mapping[str, SourcePrediction] | None = None,
    checked_variables: frozenset[str] | None = None,
) -> str | None:
    """Why the grid cannot check its own law at this target, or None.

    Too small: no budget could be held out; a source has fewer than `MIN_TOKEN_COUNTS`
    training-token counts; or a prediction reaches beyond the data along a variable that
    no fold checked (``checked_variables``), so nothing measured how the law extrapolates
    there.
    """
    reasons = []
    if not checked:
        reasons.append("no budget could be held out to check the law")
    thin = {
        s: sf.pool.token_counts
        for s, sf in fits.items()
        if sf.pooled.result is not None and sf.pool.token_counts < MIN_TOKEN_COUNTS
    }
    if thin:
        counts = ", ".join(f"{s} {n}" for s, n in sorted(thin.items()))
        reasons.append(
            f"too few training-token counts ({counts}) for a curve in tokens, which needs "
            f"{MIN_TOKEN_COUNTS}"
        )
    if checked and predictions and checked_variables is not None:
        unchecked = sorted(
            {
                v
                for p in predictions.values()
                for v, f in p.reach.items()
                if f > 1.0 + 1e-9 and v not in checked_variables
            }
        )
        if unchecked:
            names = ", ".join(_VARIABLE_NAMES.get(v, v) for v in unchecked)
            reasons.append(
                f"the target lies beyond the sampled {names}, and no fold checked how the law "
                f"extrapolates there, since a fold along training tokens needs "
                f"{MIN_TOKEN_COUNTS + 1} or more token counts"
            )
    return "; ".join(reasons) or None


_VARIABLE_NAMES = {"train_tokens": "training tokens", "curation_spend": "curation spend"}


def _outcome(
    predictions: Mapping[str, SourcePrediction],
    p_best: Mapping[str, float],
    leader: str | None,
    gap: float | None,
    small: str | None,
    rule: DecisionRule,
) -> str:
    if leader is None:
        return "none"
    if gap is None:
        return "single"
    if small is not None:
        return "unchecked"
    clear = gap > rule.margin(predictions[leader].predicted)
    return "buy" if p_best.get(leader, 0.0) >= rule.threshold and clear else "not_separated"


def probability_best(
    draws: Mapping[str, np.ndarray], objective: Objective = BPB
) -> dict[str, float]:
    """``P(source has the best metric)`` from draws ``{source: (B,)}``: the lowest, or the
    highest when ``objective.higher_is_better``.

    Each source's draws are independent of the others' (its own cells, its own seed), so
    draw ``b`` of every source together is one draw of the joint belief. A draw in which
    no source has a finite value counts for none.
    """
    if not draws:
        return {}
    names = sorted(draws)
    stack = objective.key(np.stack([draws[s] for s in names]))  # (S, B), lower is better
    stack = np.where(np.isfinite(stack), stack, np.inf)
    valid = np.isfinite(stack).any(axis=0)  # (B,)
    if not valid.any():
        return {s: 0.0 for s in names}
    winner = np.argmin(stack[:, valid], axis=0)
    counts = np.bincount(winner, minlength=len(names))
    return {s: float(c) / int(valid.sum()) for s, c in zip(names, counts, strict=True)}


def micro_annealing(
    cells: pd.DataFrame,
    target_ranking: Sequence[str],
    recommended: str | None,
    *,
    by_cost: bool,
    objective: Objective = BPB,
) -> MicroAnnealing | None:
    """Rank sources by their cheapest sampled cell (observed ``objective.column``, seeds
    averaged)."""
    col = objective.column
    if not target_ranking:
        return None
    picked: dict[str, dict[str, float]] = {}
    for s in target_ranking:
        rows = cells[cells["source"] == s]
        if rows.empty:
            continue
        key = (
            ["total_cost", "train_tokens"]
            if by_cost and "total_cost" in rows
            else ["train_tokens", "curation_spend"]
        )
        cheapest = rows.sort_values(key, kind="mergesort").iloc[0]
        picked[s] = {
            "curation_spend": float(cheapest["curation_spend"]),
            "train_tokens": float(cheapest["train_tokens"]),
            col: float(cheapest[col]),
            **({"total_cost": float(cheapest["total_cost"])} if "total_cost" in rows else {}),
        }
    ranking = tuple(sorted(picked, key=lambda s: (float(objective.key(picked[s][col])), s)))
    at_target = [s for s in target_ranking if s in picked]
    pick = ranking[0] if ranking else None
    return MicroAnnealing(
        cells=MappingProxyType(picked),
        ranking=ranking,
        pick=pick,
        ranking_differs=list(ranking) != at_target,
        pick_differs=pick is not None and recommended is not None and pick != recommended,
    )


def _band(draws: np.ndarray, q: list[float]) -> np.ndarray:
    """Percentiles ``(2, G)`` of draws ``(B, G)`` per column; NaN where a column has none."""
    out = np.full((2, draws.shape[1]), np.nan)
    ok = np.isfinite(draws).all(axis=0)
    if ok.any():
        out[:, ok] = np.quantile(draws[:, ok], q, axis=0)
    return out


def _micro_budget(target: Target, cells: pd.DataFrame) -> float:
    if target.total_cost is not None:
        return float(cells["total_cost"].min())
    return float(cells["train_tokens"].min())


def _axis_curves(
    target: Target,
    ranked: Mapping[str, SourceFits],
    points: Mapping[str, tuple[float, float]],
    cells: pd.DataFrame,
    frontier: Frontier | None,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each source's point curve ``(G,)`` and draws ``(B, G)`` along the target's axis."""
    if target.total_cost is not None:
        if frontier is None:
            raise AnalysisError("a total_cost target needs the cost frontier")
        pts = {s: frontier.curves[s]["predicted"] for s in ranked if s in frontier.curves}
        drs = {s: frontier.draws[s] for s in pts}
        return frontier.costs, pts, drs
    lo = float(cells["train_tokens"].min())
    top = max(float(cells["train_tokens"].max()), max(d for d, _ in points.values()))
    grid = np.geomspace(lo, top * CROSSOVER_REACH, CROSSOVER_GRID)
    pts, drs = {}, {}
    for s, sf in ranked.items():
        c = points[s][1]
        pts[s] = sf.predict(grid, c)
        drs[s] = sf.draws(grid, c)
    return grid, pts, drs


def find_crossovers(
    axis: str,
    grid: np.ndarray,
    points: Mapping[str, np.ndarray],
    draws: Mapping[str, np.ndarray],
    *,
    level: float,
    span: tuple[float, float],
    objective: Objective = BPB,
) -> tuple[Crossover, ...]:
    """Pairwise sign changes of ``L_i - L_j`` on ``grid`` ``(G,)``, with bootstrap intervals.

    ``points[s]`` is ``(G,)``, ``draws[s]`` ``(B, G)``; NaN marks infeasible budgets.
    """
    log_grid = np.log(grid)
    names = sorted(points)
    q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    found: list[Crossover] = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            diff = points[a] - points[b]  # (G,)
            boot = draws[a] - draws[b]  # (B, G)
            boot_cross = _crossings(log_grid, boot)  # list per resample of log-x crossings
            share = float(np.mean([len(c) > 0 for c in boot_cross])) if boot_cross else 0.0
            point_cross = _crossings(log_grid, diff[None, :])[0]
            candidates = [(lx, True) for lx in point_cross]
            if not candidates and share >= POSSIBLE_CROSSOVER:
                firsts = [c[0] for c in boot_cross if c]
                candidates = [(float(np.median(firsts)), False)]
            for lx, is_point in candidates:
                near = [min(c, key=lambda v, lx=lx: abs(v - lx)) for c in boot_cross if c]
                lo, hi = np.quantile(near, q) if near else (lx, lx)
                k = int(np.searchsorted(log_grid, lx))
                below = diff[max(k - 1, 0)] if is_point else np.nanmedian(boot[:, max(k - 1, 0)])
                before, after = (a, b) if objective.key(below) < 0 else (b, a)
                at = float(math.exp(lx))
                found.append(
                    Crossover(
                        axis=axis,
                        before=before,
                        after=after,
                        at=at,
                        lower=float(math.exp(lo)),
                        upper=float(math.exp(hi)),
                        probability=share,
                        point_estimate=is_point,
                        before_target=min(span) <= at <= max(span),
                    )
                )
    return tuple(sorted(found, key=lambda c: c.at))


def _crossings(log_grid: np.ndarray, diff: np.ndarray) -> list[list[float]]:
    """Log-x positions where each row of ``diff (R, G)`` changes sign (linear interpolation)."""
    s = np.sign(diff)
    a, b = s[:, :-1], s[:, 1:]
    change = (a * b < 0) & np.isfinite(diff[:, :-1]) & np.isfinite(diff[:, 1:])
    out: list[list[float]] = [[] for _ in range(diff.shape[0])]
    rows, cols = np.nonzero(change)
    d0, d1 = diff[rows, cols], diff[rows, cols + 1]
    lx = log_grid[cols] + (log_grid[cols + 1] - log_grid[cols]) * d0 / (d0 - d1)
    for r, v in zip(rows, lx, strict=True):
        out[r].append(float(v))
    return out


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The headline of a report: the decision at each target and the best observed cells."""

    targets: tuple[TargetDecision, ...]
    """One per target, the primary (headline) one first."""
    tolerance_pct: float
    best_cell: Mapping[str, Any]
    """The cell (seeds averaged) with the lowest observed domain bpb."""
    cheapest_cell_within_tolerance: Mapping[str, Any] | None
    """The lowest-total-cost cell within ``tolerance_pct`` percent of ``best_cell``; None
    without costs."""
    messages: tuple[str, ...]
    """The headline, one sentence each, the recommendation first."""

    @property
    def primary(self) -> TargetDecision:
        return self.targets[0]

    @property
    def best_source(self) -> str | None:
        return self.primary.recommended

    def to_dict(self) -> dict[str, Any]:
        p = self.primary
        return {
            "target": p.target.to_dict(),
            "outcome": p.outcome,
            "buy": p.recommended if p.buy else None,
            "best_source": self.best_source,
            "p_best": dict(p.p_best),
            "micro_annealing_pick": None if p.micro_annealing is None else p.micro_annealing.pick,
            "micro_annealing_wrong": None
            if p.micro_annealing is None
            else p.micro_annealing.ranking_differs,
            "tolerance_pct": self.tolerance_pct,
            "best_cell": dict(self.best_cell),
            "cheapest_cell_within_tolerance": None
            if self.cheapest_cell_within_tolerance is None
            else dict(self.cheapest_cell_within_tolerance),
            "messages": list(self.messages),
        }


def decide(
    targets: Sequence[TargetDecision], cells: pd.DataFrame, *, tolerance_pct: float = 1.0
) -> Decision:
    """Assemble the headline from the per-target decisions and the observed cells (the
    best observed cell by the primary target's `Objective`)."""
    if tolerance_pct < 0:
        raise AnalysisError(f"tolerance_pct must be >= 0; got {tolerance_pct}")
    if not targets:
        raise AnalysisError("decide() needs at least one target")
    obj = targets[0].objective
    col = obj.column
    key = pd.Series(obj.key(cells[col]), index=cells.index)
    best = cells.loc[key.idxmin()]
    cheapest = None
    if "total_cost" in cells.columns and np.isfinite(cells["total_cost"]).all():
        # within tolerance_pct of the best: no more than that share worse
        limit = float(key.min()) + abs(float(best[col])) * tolerance_pct / 100.0
        good = cells[key <= limit].assign(_key=key[key <= limit])
        cheapest = _cell(good.sort_values(["total_cost", "_key"], kind="stable").iloc[0], col)
    messages = [m for td in targets for m in headline(td)]
    if cheapest is not None:
        messages.append(
            f"Cheapest observed cell within {tolerance_pct:g}% of the best observed {obj.label} "
            f"({float(best[col]):.4f}, {best['source']}): {cheapest['source']} at "
            f"${cheapest['curation_spend']:,.4g} curation spend and "
            f"{format_tokens(cheapest['train_tokens'])} training tokens, "
            f"{obj.with_unit(cheapest[col])} for ${cheapest['total_cost']:,.4g} total."
        )
    return Decision(
        targets=tuple(targets),
        tolerance_pct=tolerance_pct,
        best_cell=MappingProxyType(_cell(best, col)),
        cheapest_cell_within_tolerance=None if cheapest is None else MappingProxyType(cheapest),
        messages=tuple(messages),
    )


def _cell(row: pd.Series, col: str = "domain_bpb") -> dict[str, Any]:
    out = {
        "source": str(row["source"]),
        "curation_spend": float(row["curation_spend"]),
        "train_tokens": float(row["train_tokens"]),
        col: float(row[col]),
        "n_seeds": int(row["n_seeds"]),
    }
    if "total_cost" in row.index:
        out["total_cost"] = float(row["total_cost"])
    return out


def _fmt_budget(axis: str, v: float) -> str:
    return format_tokens(v) if axis == "train_tokens" else f"${v:,.4g}"
