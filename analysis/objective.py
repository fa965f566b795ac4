"""Which way is better: the one place that knows whether the decided metric is a loss
(lower is better, e.g. bits per byte) or a score (higher is better, e.g. accuracy).

Rankings, P(best), gaps, crossovers, the observed best cell and the headline's wording
all read the `Objective` of the decision, so a score is never ranked as a loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True, kw_only=True)
class Objective:
    """The metric a decision ranks sources by."""

    column: str = "domain_bpb"
    """Results-table column of the metric (observed cells)."""
    label: str = "domain bpb"
    """How the headline names the metric."""
    unit: str = "bpb"
    """Unit of gaps and margins in the metric's units ("" for a share such as accuracy)."""
    higher_is_better: bool = False

    @property
    def sign(self) -> float:
        """+1 for a loss, -1 for a score: ``sign * metric`` is lower for the better source."""
        return -1.0 if self.higher_is_better else 1.0

    def key(self, value: ArrayLike) -> np.ndarray:
        """A loss-like key: lower is better whatever the metric's direction."""
        return self.sign * np.asarray(value, dtype=float)

    def ahead(self, leader: ArrayLike, other: ArrayLike) -> np.ndarray:
        """How far ``leader`` is ahead of ``other`` (positive: ahead), metric units."""
        return self.sign * (np.asarray(other, dtype=float) - np.asarray(leader, dtype=float))

    def with_unit(self, value: float, digits: int = 4) -> str:
        return f"{value:.{digits}f} {self.unit}" if self.unit else f"{value:.{digits}f}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "label": self.label,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
        }


BPB = Objective()
"""The default: held-out domain bits per byte, lower is better."""
