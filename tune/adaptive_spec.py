"""The ``adaptive:`` section of an experiment spec: how `annealscale sweep --adaptive` chooses
cells and when it stops."""

from __future__ import annotations

import math

from annealscale.core.errors import check
from annealscale.core.spec_model import SpecModel


class AdaptiveSpec(SpecModel):
    """Target, stop rule and batch size of an adaptive sweep (not part of any cell identity)."""

    target_tokens: int | None = None
    """Training tokens of the final anneal the decision is for (tokens); default: the
    largest budget of the grid."""
    target_spend: float | None = None
    """Curation spend per source at the target (USD); default: each source's largest."""
    target_cost: float | None = None
    """A total budget (USD) to split instead: the decision is then the best allocation."""
    threshold: float = 0.9
    """Stop when the recommended source's probability of being best reaches this and the
    held-out checks pass (fraction)."""
    budget_fraction: float = 0.6
    """A cap on the sweep's cost as a fraction of the full grid's: no cell starts that would
    take the cost of the finished, failed and running cells above it, and the sweep stops
    when none fits (fraction)."""
    batch_size: int | None = None
    """Cells proposed jointly (q); default: the sweep's concurrency."""
    law: str = "auto"
    """Law the proposer fits (`annealscale.analysis.laws`), or ``auto``."""

    def validate_spec(self) -> None:
        check(0.5 <= self.threshold < 1.0, "threshold", "must lie in [0.5, 1) (probability)")
        check(
            0.0 < self.budget_fraction <= 1.0,
            "budget_fraction",
            "must lie in (0, 1] (fraction of the full grid's cost)",
        )
        check(
            self.batch_size is None or self.batch_size >= 1,
            "batch_size",
            "must be at least 1 (or omitted to use the sweep's concurrency)",
        )
        for name in ("target_tokens", "target_spend", "target_cost"):
            v = getattr(self, name)
            check(v is None or (0 < v < math.inf), name, "must be positive and finite")
        check(
            self.target_cost is None or (self.target_tokens is None and self.target_spend is None),
            "target_cost",
            "a total-cost target fixes tokens and spend itself; give it alone",
        )
