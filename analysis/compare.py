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
from annealscale.analysis.sources import SourceFits

CROSSOVER_GRID = 160
"""Points of the log grid on which pairwise crossovers are searched."""
CROSSOVER_REACH = 10.0
"""Crossovers are searched up to this factor beyond the target or the largest sample."""
POSSIBLE_CROSSOVER = 0.2
"""A crossover absent from the point estimate is reported when at least this share of
resamples has one."""


@dataclass(frozen=True, kw_only=True)
class Target:
    """The budget at which the team will act.

    Either training tokens and/or curation spend (each source at its largest sampled
    spend when no spend is given, at the largest sampled training tokens when no
    tokens are given), or a total cost (each source at its best split of it).
    """

    train_tokens: float | None = None
    """Training tokens ``D`` of the final anneal (tokens)."""
    curation_spend: float | None = None
    """Curation spend ``c`` per source (USD)."""
    total_cost: float | None = None
    """Total budget, curation plus training (USD)."""

    def __post_init__(self) -> None:
        values = {
            "train_tokens": self.train_tokens,
            "curation_spend": self.curation_spend,
            "total_cost": self.total_cost,
        }
        given = {k: v for k, v in values.items() if v is not None}
        if not given:
            raise AnalysisError("a target needs train_tokens, curation_spend or total_cost")
        if self.total_cost is not None and len(given) > 1:
            raise AnalysisError(
                "a total_cost target fixes the split itself; give it alone "
                "(use a separate target for tokens or spend)"
            )
        for k, v in given.items():
            if not (math.isfinite(v) and v > 0):
                raise AnalysisError(f"target {k} must be finite and positive; got {v}")

    @property
    def axis(self) -> str:
        """The budget axis along which crossovers are searched."""
        return "total_cost" if self.total_cost is not None else "train_tokens"

    @property
    def label(self) -> str:
        if self.total_cost is not None:
            return f"${self.total_cost:,.4g} total cost"
        parts = []
        if self.train_tokens is not None:
            parts.append(f"{format_tokens(self.train_tokens)} training tokens")
        if self.curation_spend is not None:
            parts.append(f"${self.curation_spend:,.4g} curation spend")
        return " and ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_tokens": self.train_tokens,
            "curation_spend": self.curation_spend,
            "total_cost": self.total_cost,
            "label": self.label,
        }


@dataclass(frozen=True, kw_only=True)
class SourcePrediction:
    """One source's predicted metric at a target."""

    source: str
    train_tokens: float
    curation_spend: float
    predicted: float
    lower: float
    upper: float
    extrapolated: bool
    total_cost: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_tokens": self.train_tokens,
            "curation_spend": self.curation_spend,
            "total_cost": self.total_cost,
            "predicted": self.predicted,
            "interval": [self.lower, self.upper],
            "extrapolated": self.extrapolated,
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
            f"(interval {span}; crossing in {self.probability:.0%} of resamples)"
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
    """Everything decided at one target."""

    target: Target
    predictions: Mapping[str, SourcePrediction]
    ranking: tuple[str, ...]
    """Sources by predicted metric, best first."""
    p_best: Mapping[str, float]
    """Probability that each source predicts the lowest metric at the target."""
    recommended: str | None
    """The source most likely to be best."""
    micro_annealing: MicroAnnealing | None
    crossovers: tuple[Crossover, ...]
    allocation: Allocation | None
    unranked: Mapping[str, str]
    """Source -> why it has no prediction."""
    level: float
    notes: tuple[str, ...] = ()
    curves: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Along the crossover axis: ``grid`` and per source ``predicted``/``lower``/``upper``."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.to_dict(),
            "level": self.level,
            "recommended": self.recommended,
            "p_best": dict(self.p_best),
            "ranking": list(self.ranking),
            "predictions": {s: p.to_dict() for s, p in self.predictions.items()},
            "micro_annealing": None
            if self.micro_annealing is None
            else self.micro_annealing.to_dict(),
            "crossovers": [c.to_dict() for c in self.crossovers],
            "allocation": None if self.allocation is None else self.allocation.to_dict(),
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
) -> TargetDecision:
    """Predict every source at ``target``, rank them, and find crossovers and flips."""
    notes: list[str] = []
    unranked = {
        s: sf.pooled.error or "no fit" for s, sf in fits.items() if sf.pooled.result is None
    }
    ranked = {s: sf for s, sf in fits.items() if sf.pooled.result is not None}
    if target.total_cost is not None and costs is None:
        raise AnalysisError(
            "a total_cost target needs cost columns (total_cost, or curation_cost and train_cost)"
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
        if target.curation_spend is not None and not all(sf.uses_spend() for sf in ranked.values()):
            notes.append("the law has no spend term: the curation spend changes only the cost")

    predictions: dict[str, SourcePrediction] = {}
    draws: dict[str, np.ndarray] = {}
    q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    for s, sf in ranked.items():
        d, c = points[s]
        point = float(sf.predict(d, c)[0])
        dr = sf.draws(d, c)[:, 0]  # (B,)
        lo, hi = np.quantile(dr, q)
        predictions[s] = SourcePrediction(
            source=s,
            train_tokens=d,
            curation_spend=c,
            predicted=point,
            lower=float(lo),
            upper=float(hi),
            extrapolated=sf.extrapolated(d, c),
            total_cost=None if costs is None else float(costs.total_cost(s, c, d)),
        )
        draws[s] = dr
    for s, sf in ranked.items():
        res = sf.pooled.result
        if res is not None and {"underdetermined", "too_few_points"} & set(res.flags):
            notes.append(
                f"{s}: {res.n_distinct_x} distinct cell value(s) for {res.law.n_params} "
                "parameters; its interval shows only the spread of curves that fit them, not "
                "the noise it cannot estimate"
            )
    ranking = tuple(sorted(predictions, key=lambda s: (predictions[s].predicted, s)))
    p_best = probability_best(draws)
    recommended = (
        max(p_best, key=lambda s: (p_best[s], -predictions[s].predicted)) if p_best else None
    )
    micro = micro_annealing(cells, ranking, recommended, by_cost=target.total_cost is not None)

    curves: dict[str, Any] = {}
    crossovers: tuple[Crossover, ...] = ()
    if len(ranked) >= 2:
        grid, pts, drs = _axis_curves(target, ranked, points, cells, frontier)
        micro_budget = _micro_budget(target, cells)
        target_budget = (
            target.total_cost if target.total_cost is not None else points[ranking[0]][0]
        )
        crossovers = find_crossovers(
            target.axis, grid, pts, drs, level=level, span=(micro_budget, target_budget)
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
        recommended=recommended,
        micro_annealing=micro,
        crossovers=crossovers,
        allocation=allocation,
        unranked=MappingProxyType(unranked),
        level=level,
        notes=tuple(notes),
        curves=curves,
    )


def probability_best(draws: Mapping[str, np.ndarray]) -> dict[str, float]:
    """``P(source has the lowest metric)`` from paired bootstrap draws ``{source: (B,)}``."""
    if not draws:
        return {}
    names = sorted(draws)
    stack = np.stack([draws[s] for s in names])  # (S, B)
    stack = np.where(np.isfinite(stack), stack, np.inf)
    winner = np.argmin(stack, axis=0)  # (B,)
    counts = np.bincount(winner, minlength=len(names))
    return {s: float(c) / stack.shape[1] for s, c in zip(names, counts, strict=True)}


def micro_annealing(
    cells: pd.DataFrame, target_ranking: Sequence[str], recommended: str | None, *, by_cost: bool
) -> MicroAnnealing | None:
    """Rank sources by their cheapest sampled cell (observed, seeds averaged)."""
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
            "domain_bpb": float(cheapest["domain_bpb"]),
            **({"total_cost": float(cheapest["total_cost"])} if "total_cost" in rows else {}),
        }
    ranking = tuple(sorted(picked, key=lambda s: (picked[s]["domain_bpb"], s)))
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
                before, after = (a, b) if below < 0 else (b, a)
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
    """Assemble the headline from the per-target decisions and the observed cells."""
    if tolerance_pct < 0:
        raise AnalysisError(f"tolerance_pct must be >= 0; got {tolerance_pct}")
    if not targets:
        raise AnalysisError("decide() needs at least one target")
    best = cells.loc[cells["domain_bpb"].idxmin()]
    cheapest = None
    if "total_cost" in cells.columns and np.isfinite(cells["total_cost"]).all():
        limit = float(best["domain_bpb"]) * (1.0 + tolerance_pct / 100.0)
        good = cells[cells["domain_bpb"] <= limit]
        cheapest = _cell(good.sort_values(["total_cost", "domain_bpb"], kind="stable").iloc[0])
    messages = headline(targets[0])
    if cheapest is not None:
        messages.append(
            f"Cheapest observed cell within {tolerance_pct:g}% of the best observed domain bpb "
            f"({float(best['domain_bpb']):.4f}, {best['source']}): {cheapest['source']} at "
            f"${cheapest['curation_spend']:,.4g} curation spend and "
            f"{format_tokens(cheapest['train_tokens'])} training tokens, "
            f"{cheapest['domain_bpb']:.4f} bpb for ${cheapest['total_cost']:,.4g} total."
        )
    return Decision(
        targets=tuple(targets),
        tolerance_pct=tolerance_pct,
        best_cell=MappingProxyType(_cell(best)),
        cheapest_cell_within_tolerance=None if cheapest is None else MappingProxyType(cheapest),
        messages=tuple(messages),
    )


def headline(td: TargetDecision) -> list[str]:
    """Sentences for a target: recommendation, micro-annealing check, crossovers, split."""
    msgs: list[str] = []
    if td.recommended is None:
        msgs.append(f"No source could be ranked at {td.target.label}.")
    else:
        p = td.predictions[td.recommended]
        where = _where(td.target, p)
        msgs.append(
            f"Buy {td.recommended}: at {td.target.label}{where} it predicts {p.predicted:.4f} "
            f"domain bpb ({td.level:.0%} interval {p.lower:.4f}-{p.upper:.4f}); probability "
            f"that it is the best source: {td.p_best[td.recommended]:.0%}."
        )
        if p.extrapolated:
            msgs.append(
                f"The target lies outside the sampled budgets of {td.recommended}: the "
                "prediction is an extrapolation, and its interval says how far to trust it."
            )
    m = td.micro_annealing
    if m is not None and m.pick is not None and len(m.ranking) > 1:
        order = " > ".join(m.ranking)
        target_order = " > ".join(s for s in td.ranking if s in m.ranking)
        if m.pick_differs:
            msgs.append(
                f"Micro-annealing would pick {m.pick} (ranking {order} at the cheapest sampled "
                f"cells); at the target the ranking is {target_order}: the micro-annealing "
                f"ranking is wrong at the target, {td.recommended} wins."
            )
        elif m.ranking_differs:
            msgs.append(
                f"Micro-annealing ranks {order} at the cheapest sampled cells; at the target "
                f"the ranking is {target_order}: micro-annealing gets the order wrong below "
                "first place."
            )
        else:
            msgs.append(f"Micro-annealing (cheapest sampled cells) and the target agree: {order}.")
    for c in td.crossovers:
        if c.point_estimate:
            where = (
                "between the cheapest sampled budget and the target"
                if c.before_target
                else "outside the span from the cheapest sampled budget to the target"
            )
            msgs.append(f"Crossover: {c.describe()}, {where}.")
    if td.allocation is not None and td.allocation.chosen is not None:
        sp = td.allocation.splits[td.allocation.chosen]
        msgs.append(
            f"Best split of ${td.allocation.total_cost:,.4g}: {sp.source}, "
            f"${sp.curation_spend:,.4g} curation spend and {format_tokens(sp.train_tokens)} "
            f"training tokens ({sp.curation_cost / sp.total_cost:.0%} of the budget on "
            f"curation); {td.allocation.note}."
        )
    if td.unranked:
        msgs.append(f"Not ranked (no fit): {', '.join(td.unranked)}.")
    return msgs


def _where(target: Target, p: SourcePrediction) -> str:
    if target.total_cost is not None:
        return (
            f" (best split: ${p.curation_spend:,.4g} curation, "
            f"{format_tokens(p.train_tokens)} training tokens)"
        )
    if target.curation_spend is None:
        return f" (curation spend ${p.curation_spend:,.4g})"
    return ""


def _cell(row: pd.Series) -> dict[str, Any]:
    out = {
        "source": str(row["source"]),
        "curation_spend": float(row["curation_spend"]),
        "train_tokens": float(row["train_tokens"]),
        "domain_bpb": float(row["domain_bpb"]),
        "n_seeds": int(row["n_seeds"]),
    }
    if "total_cost" in row.index:
        out["total_cost"] = float(row["total_cost"])
    return out


def _fmt_budget(axis: str, v: float) -> str:
    return format_tokens(v) if axis == "train_tokens" else f"${v:,.4g}"


def format_tokens(n: float) -> str:
    """A token count for people: ``3e6``, ``1.5e8``; empty when not finite."""
    if not math.isfinite(n):
        return ""
    mantissa, exponent = f"{n:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"
