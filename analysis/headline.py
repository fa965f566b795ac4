"""The decision in sentences: what the headline of the report and the terminal say at a
target, built from a `TargetDecision` and nothing else."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from annealscale.analysis.target import Target, format_tokens

if TYPE_CHECKING:
    from annealscale.analysis.compare import SourcePrediction, TargetDecision


def format_probability(p: float) -> str:
    """A probability from a finite sample of draws: never "100%" or "0%"."""
    if p > 0.99:
        return ">99%"
    if p < 0.01:
        return "<1%"
    return f"{math.floor(p * 100):d}%"  # rounded down: 0.897 never reads as 90%


def headline(td: TargetDecision) -> list[str]:
    """Sentences for a target: the outcome, what would decide it, how far the prediction
    reaches, the micro-annealing check, crossovers and the budget split."""
    msgs: list[str] = []
    lead, run = td.recommended, td.runner_up
    label = td.target.label
    if lead is None:
        msgs.append(f"No source could be ranked at {label}.")
    else:
        p = td.predictions[lead]
        obj = td.objective
        pred = (
            f"{p.predicted:.4f} {obj.label} ({td.level:.0%} interval {p.lower:.4f}-{p.upper:.4f})"
        )
        where = _where(td.target, p)
        if td.outcome == "single":
            msgs.append(f"Only {lead} could be ranked: at {label}{where} it predicts {pred}.")
        else:
            gap = _gap(td)
            pb = format_probability(td.p_best.get(lead, 0.0))
            if td.outcome == "buy":
                msgs.append(
                    f"Buy {lead}: at {label}{where} it predicts {pred}; P(best) {pb}, ahead of "
                    f"{run} by {gap}, which meets the rule ({td.rule.describe(obj.unit)})."
                )
            elif td.outcome == "unchecked":
                msgs.append(
                    f"No decision at {label}: the grid is too small to check its own law: "
                    f"{td.small_grid}. On the fitted law {lead} leads {run} by {gap}, "
                    f"P(best) {pb}, which these cells cannot confirm."
                )
            else:
                msgs.append(
                    f"Not separated yet at {label}: {lead} leads {run} by {gap}, P(best) {pb}; "
                    f"buying needs {td.rule.describe(obj.unit)}. {lead}{where} predicts {pred}."
                )
    if td.next_cells and td.outcome in ("not_separated", "unchecked"):
        cells = "; ".join(_next_cell(c) for c in td.next_cells[:3])
        msgs.append(f"To separate them, run next: {cells}.")
    far = {s: p for s, p in td.predictions.items() if p.max_reach > 1.0 + 1e-9}
    if far:
        groups: dict[str, list[str]] = {}
        for s, p in sorted(far.items()):
            var = max(p.reach, key=lambda v: p.reach[v])
            reach = f"{factor(p.max_reach)} beyond the sampled {_reach_var(var)}"
            groups.setdefault(reach, []).append(s)
        every = len(far) == len(td.predictions) > 1
        parts = "; ".join(
            f"{reach} ({'every source' if every and len(groups) == 1 else ', '.join(names)})"
            for reach, names in groups.items()
        )
        msgs.append(
            f"Extrapolation: the predictions reach {parts}; their intervals include the "
            "error the laws made when predicting larger budgets from smaller ones."
        )
    m = td.micro_annealing
    if m is not None and m.pick is not None and len(m.ranking) > 1:
        order = " > ".join(m.ranking)
        target_order = " > ".join(s for s in td.ranking if s in m.ranking)
        if m.pick_differs:
            verdict = (
                f"the micro-annealing ranking is wrong at the target, {td.recommended} wins"
                if td.buy
                else "the rankings differ, though the target's is not yet decided"
            )
            msgs.append(
                f"Micro-annealing would pick {m.pick} (ranking {order} at the cheapest sampled "
                f"cells); at the target the predicted ranking is {target_order}: {verdict}."
            )
        elif m.ranking_differs:
            msgs.append(
                f"Micro-annealing ranks {order} at the cheapest sampled cells; at the target "
                f"the predicted ranking is {target_order}."
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
        which = "the source to buy" if td.buy else "the leader, not yet a decision"
        msgs.append(
            f"Best split of ${td.allocation.total_cost:,.4g} for {sp.source} ({which}): "
            f"${sp.curation_spend:,.4g} curation spend and {format_tokens(sp.train_tokens)} "
            f"training tokens ({sp.curation_cost / sp.total_cost:.0%} of the budget on "
            f"curation); it answers how to divide the budget once the source is chosen, and "
            f"{td.allocation.note}."
        )
    if td.unranked:
        msgs.append(f"Not ranked (no fit): {', '.join(td.unranked)}.")
    return msgs


def _gap(td: TargetDecision) -> str:
    assert td.gap is not None and td.recommended is not None
    lead = td.predictions[td.recommended].predicted
    text = f"{td.objective.with_unit(td.gap)} ({100 * td.gap / abs(lead):.3g}%"
    if td.gap_interval is not None:
        lo, hi = td.gap_interval
        text += f"; {td.level:.0%} interval {lo:+.4f} to {hi:+.4f}"
    return text + ")"


def _next_cell(c: Mapping[str, Any]) -> str:
    return (
        f"{c['source']} at ${c['curation_spend']:,.4g} curation spend and "
        f"{format_tokens(c['train_tokens'])} tokens (${c['cost']:,.4g})"
    )


def factor(f: float) -> str:
    """An extrapolation factor for people: ``3.0x``, ``13,563x``."""
    return f"{f:,.0f}x" if f >= 10 else f"{f:.1f}x"


def _reach_var(v: str) -> str:
    return {"train_tokens": "training tokens", "curation_spend": "curation spend"}.get(v, v)


def _where(target: Target, p: SourcePrediction) -> str:
    if target.total_cost is not None:
        return (
            f" (best split: ${p.curation_spend:,.4g} curation, "
            f"{format_tokens(p.train_tokens)} training tokens)"
        )
    if not p.spend_modelled:
        return " (every curation spend pooled: the law has no spend term)"
    if target.curation_spend is None:
        return f" (curation spend ${p.curation_spend:,.4g})"
    return ""
