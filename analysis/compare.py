"""Which source to buy, at what budget: rankings from the fits and the cost view."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.errors import AnalysisError
from analysis.sources import SourceFits


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The headline of a report.

    Budgets here are training tokens: sources are ranked by their law's
    prediction (all spends pooled) at the smallest and the largest sampled
    training-token counts of the whole table.
    """

    smallest_train_tokens: float
    largest_train_tokens: float
    ranking_at_smallest: tuple[tuple[str, float], ...]
    """``(source, predicted domain bpb)``, best first."""
    ranking_at_largest: tuple[tuple[str, float], ...]
    unranked: tuple[str, ...]
    """Sources whose pooled fit failed; they are left out of the rankings."""
    best_source: str | None
    """Lowest predicted domain bpb at the largest sampled training tokens."""
    micro_annealing_pick: str | None
    """Lowest predicted domain bpb at the smallest sampled training tokens."""
    ranking_flips: bool
    """Whether the order of sources differs between the two budgets."""
    tolerance_pct: float
    best_cell: Mapping[str, Any]
    """The cell (seeds averaged) with the lowest observed domain bpb."""
    cheapest_cell_within_tolerance: Mapping[str, Any]
    """The lowest-total-cost cell within ``tolerance_pct`` percent of ``best_cell``."""
    messages: tuple[str, ...]
    """The headline, one sentence each."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_axis": "train_tokens",
            "smallest_train_tokens": self.smallest_train_tokens,
            "largest_train_tokens": self.largest_train_tokens,
            "ranking_at_smallest": [
                {"source": s, "predicted_domain_bpb": v} for s, v in self.ranking_at_smallest
            ],
            "ranking_at_largest": [
                {"source": s, "predicted_domain_bpb": v} for s, v in self.ranking_at_largest
            ],
            "unranked": list(self.unranked),
            "best_source": self.best_source,
            "micro_annealing_pick": self.micro_annealing_pick,
            "ranking_flips": self.ranking_flips,
            "tolerance_pct": self.tolerance_pct,
            "best_cell": dict(self.best_cell),
            "cheapest_cell_within_tolerance": dict(self.cheapest_cell_within_tolerance),
            "messages": list(self.messages),
        }


def decide(
    fits: Mapping[str, SourceFits], cells: pd.DataFrame, *, tolerance_pct: float = 1.0
) -> Decision:
    """Rank sources at the smallest and largest sampled budgets and find the cheapest good cell.

    Parameters
    ----------
    fits : mapping of str to SourceFits
        Per-source fits of a one-variable law in training tokens.
    cells : pandas.DataFrame
        Seed-averaged finished cells, as from `analysis.table.cell_means`.
    tolerance_pct : float
        A cell "reaches the best" when its domain bpb is at most
        ``(1 + tolerance_pct / 100)`` times the best cell's.
    """
    if tolerance_pct < 0:
        raise AnalysisError(f"tolerance_pct must be >= 0; got {tolerance_pct}")
    for sf in fits.values():
        res = sf.pooled.result
        if res is not None and res.law.columns != ("train_tokens",):
            raise AnalysisError(
                f"decide() ranks laws of train_tokens only; got {res.law.name!r} "
                f"over {res.law.columns}"
            )
    d_min = float(cells["train_tokens"].min())
    d_max = float(cells["train_tokens"].max())
    ranked = {s: sf.pooled for s, sf in fits.items() if sf.pooled.result is not None}
    unranked = tuple(s for s in fits if s not in ranked)

    def ranking(d: float) -> tuple[tuple[str, float], ...]:
        preds = [(s, float(g.predict([d])[0])) for s, g in ranked.items()]
        return tuple(sorted(preds, key=lambda sv: (sv[1], sv[0])))

    at_small, at_large = ranking(d_min), ranking(d_max)
    best_source = at_large[0][0] if at_large else None
    pick = at_small[0][0] if at_small else None
    flips = [s for s, _ in at_small] != [s for s, _ in at_large]

    best = cells.loc[cells["domain_bpb"].idxmin()]
    limit = float(best["domain_bpb"]) * (1.0 + tolerance_pct / 100.0)
    good = cells[cells["domain_bpb"] <= limit]
    cheapest = good.sort_values(["total_cost", "domain_bpb"], kind="stable").iloc[0]

    messages = []
    if best_source is not None:
        messages.append(
            f"Buy {best_source}: at {format_tokens(d_max)} training tokens (the largest sampled "
            f"budget) its law predicts {at_large[0][1]:.4f} domain bpb, the lowest of "
            f"{len(at_large)} source(s)."
        )
    messages.append(
        f"Cheapest cell within {tolerance_pct:g}% of the best observed domain bpb "
        f"({float(best['domain_bpb']):.4f}, {best['source']}): {cheapest['source']} at "
        f"${float(cheapest['curation_spend']):,.2f} curation spend and "
        f"{format_tokens(float(cheapest['train_tokens']))} training tokens, "
        f"{float(cheapest['domain_bpb']):.4f} bpb for ${float(cheapest['total_cost']):,.2f} total."
    )
    if flips and pick != best_source:
        messages.append(
            f"Micro-annealing would pick {pick} (best at {format_tokens(d_min)} training tokens); "
            f"at the largest budget ({format_tokens(d_max)}) {best_source} wins."
        )
    elif flips:
        messages.append(
            f"The ranking changes between {format_tokens(d_min)} and {format_tokens(d_max)} "
            f"training tokens below first place; {best_source} leads at both."
        )
    elif len(at_large) > 1:
        messages.append(
            f"The ranking at {format_tokens(d_min)} training tokens matches the one at "
            f"{format_tokens(d_max)}: micro-annealing and the largest budget agree on "
            f"{best_source}."
        )
    if unranked:
        messages.append(f"Not ranked (no fit): {', '.join(unranked)}.")

    return Decision(
        smallest_train_tokens=d_min,
        largest_train_tokens=d_max,
        ranking_at_smallest=at_small,
        ranking_at_largest=at_large,
        unranked=unranked,
        best_source=best_source,
        micro_annealing_pick=pick,
        ranking_flips=flips,
        tolerance_pct=tolerance_pct,
        best_cell=_cell(best),
        cheapest_cell_within_tolerance=_cell(cheapest),
        messages=tuple(messages),
    )


def _cell(row: pd.Series) -> dict[str, Any]:
    return {
        "source": str(row["source"]),
        "curation_spend": float(row["curation_spend"]),
        "train_tokens": float(row["train_tokens"]),
        "domain_bpb": float(row["domain_bpb"]),
        "total_cost": float(row["total_cost"]),
        "n_seeds": int(row["n_seeds"]),
    }


def format_tokens(n: float) -> str:
    """A token count for people: ``3e6``, ``1.5e8``; empty when not finite."""
    if not math.isfinite(n):
        return ""
    mantissa, exponent = f"{n:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"
