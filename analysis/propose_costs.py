"""What a proposed cell would cost, given what has already been paid for.

A cell's cost is not fixed: the curated pool of ``(source, spend)`` is paid once and
reused by every cell on it, and with warmup-stable-decay branching the stable trunk of
a pool is shared by cells at several token counts (only the trunk beyond what was
already trained, and the cell's own cooldown, are new). The proposer therefore asks a
cost model for the *marginal* cost of a cell given the cells already paid for
(finished, running, or chosen earlier in the same batch). Any object with a
``marginal_cost(cell, paid)`` method (the `CellCostModel` protocol) can be plugged in.

References
----------
.. [1] Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed
   Training Durations" (warmup-stable-decay, branching cooldowns from one trunk).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from annealscale.analysis.errors import AnalysisError


@dataclass(frozen=True, kw_only=True)
class CandidateCell:
    """A cell the proposer may choose: one (source, curation spend, training tokens) point."""

    source: str
    curation_spend: float
    """USD."""
    train_tokens: float
    """Training tokens of the anneal."""
    unique_tokens: float | None = None
    """Tokens in the curated pool ``U(c)``, when known before the cell runs."""
    key: str | None = None
    """A caller's name for the cell (e.g. the sweep's cell identity)."""

    @property
    def pool(self) -> tuple[str, float]:
        return (self.source, float(self.curation_spend))

    @property
    def name(self) -> str:
        return self.key or f"{self.source}|{self.curation_spend:g}|{self.train_tokens:g}"

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "curation_spend": self.curation_spend,
            "train_tokens": self.train_tokens,
            "unique_tokens": self.unique_tokens,
            "key": self.key,
        }


class CellCostModel(Protocol):
    """Marginal cost (USD) of running ``cell`` after the cells in ``paid`` were paid for."""

    def marginal_cost(self, cell: CandidateCell, paid: Iterable[CandidateCell]) -> float: ...

    def standalone_cost(self, cell: CandidateCell) -> float: ...

    def curation_cost(self, source: str, spend: float) -> float: ...


@dataclass(frozen=True, kw_only=True)
class PoolReuseCosts:
    """Curation paid once per (source, spend); training paid per cell.

    ``curation`` gives the curation cost of each pool (USD); a pool it does not list
    costs ``spend * curation_ratio.get(source, 1)``. Training costs
    ``train_fixed_usd + usd_per_train_token * tokens``, or ``train_cost(cell)`` when given.
    """

    usd_per_train_token: float
    train_fixed_usd: float = 0.0
    curation: Mapping[tuple[str, float], float] = field(default_factory=dict)
    curation_ratio: Mapping[str, float] = field(default_factory=dict)
    train_cost_fn: Callable[[CandidateCell], float] | None = None

    def __post_init__(self) -> None:
        if not (self.usd_per_train_token > 0 and math.isfinite(self.usd_per_train_token)):
            raise AnalysisError(
                f"usd_per_train_token must be positive and finite; got {self.usd_per_train_token}"
            )
        object.__setattr__(self, "curation", MappingProxyType(dict(self.curation)))
        object.__setattr__(self, "curation_ratio", MappingProxyType(dict(self.curation_ratio)))

    def curation_cost(self, source: str, spend: float) -> float:
        known = self.curation.get((source, float(spend)))
        if known is not None:
            return float(known)
        return float(spend) * float(self.curation_ratio.get(source, 1.0))

    def train_cost(self, cell: CandidateCell) -> float:
        if self.train_cost_fn is not None:
            return float(self.train_cost_fn(cell))
        return self.train_fixed_usd + self.usd_per_train_token * float(cell.train_tokens)

    def standalone_cost(self, cell: CandidateCell) -> float:
        return self.curation_cost(*cell.pool) + self.train_cost(cell)

    def marginal_cost(self, cell: CandidateCell, paid: Iterable[CandidateCell]) -> float:
        pools = {c.pool for c in paid}
        curation = 0.0 if cell.pool in pools else self.curation_cost(*cell.pool)
        return curation + self.train_cost(cell)

    def spent(self, cells: Iterable[CandidateCell]) -> float:
        """Total cost of running ``cells`` (each pool's curation once)."""
        total, paid = 0.0, []
        for c in cells:
            total += self.marginal_cost(c, paid)
            paid.append(c)
        return total


@dataclass(frozen=True, kw_only=True)
class TrunkSharingCosts(PoolReuseCosts):
    """`PoolReuseCosts` with warmup-stable-decay branching: per pool, one stable trunk is
    trained once as far as the largest cell needs; each cell adds its cooldown.

    A cell of ``D`` tokens needs the trunk up to ``(1 - cooldown_fraction) * D`` and a
    cooldown of ``cooldown_fraction * D`` tokens.
    """

    cooldown_fraction: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.cooldown_fraction <= 1.0:
            raise AnalysisError(
                f"cooldown_fraction must lie in (0, 1]; got {self.cooldown_fraction}"
            )

    def marginal_cost(self, cell: CandidateCell, paid: Iterable[CandidateCell]) -> float:
        paid = list(paid)
        same = [c for c in paid if c.pool == cell.pool]
        curation = 0.0 if same else self.curation_cost(*cell.pool)
        stable = 1.0 - self.cooldown_fraction
        trunk_done = max((stable * c.train_tokens for c in same), default=0.0)
        new_tokens = self.cooldown_fraction * cell.train_tokens + max(
            0.0, stable * cell.train_tokens - trunk_done
        )
        return curation + self.train_fixed_usd + self.usd_per_train_token * new_tokens
