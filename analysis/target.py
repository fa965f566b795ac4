"""The budget a decision is made at, and how budgets are written for people."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from annealscale.analysis.errors import AnalysisError


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


def format_tokens(n: float) -> str:
    """A token count for people: ``3e6``, ``1.5e8``; empty when not finite."""
    if not math.isfinite(n):
        return ""
    mantissa, exponent = f"{n:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"
