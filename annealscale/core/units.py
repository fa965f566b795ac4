"""Units shared by every package: compute is counted in FLOPs and priced per PFLOP."""

from __future__ import annotations

FLOPS_PER_PFLOP = 1e15
"""FLOPs in one PFLOP (10^15), the unit ``prices.usd_per_pflop`` is quoted in."""


def flops_to_usd(flops: float, usd_per_pflop: float) -> float:
    """Price of ``flops`` FLOPs at ``usd_per_pflop`` USD per 10^15 FLOPs."""
    return flops / FLOPS_PER_PFLOP * usd_per_pflop


def pflops(flops: float) -> float:
    """``flops`` in PFLOP, for messages and reports."""
    return flops / FLOPS_PER_PFLOP
