"""Where one cell's Ray Train workers go: packed onto one node when they fit.

A cell's ranks talk over NVLink only when they share a node; spread over pods they talk
over the pod network. Given ``resources.gpus_per_node`` (the GPUs of one worker pod or VM),
a GPU cell that fits one node gets ``STRICT_PACK`` (all ranks on one node, or it waits for
one), and a larger cell, which the spec makes use whole nodes, gets ``PACK`` (nodes filled
one at a time). CPU cells keep Ray's default, ``PACK``.
"""

from __future__ import annotations


def cell_gpus(resources) -> int:
    """GPUs one cell reserves: workers x GPUs per worker (`tune.spec.ResourcesSpec`)."""
    return resources.num_workers * resources.gpus_per_worker


def placement_strategy(resources) -> str:
    """The Ray placement-group strategy for one cell's Train workers."""
    gpus = cell_gpus(resources)
    if 0 < gpus <= resources.gpus_per_node:
        return "STRICT_PACK"
    return "PACK"


def nodes_per_cell(resources) -> int | None:
    """Whole GPU nodes one cell occupies (None for a CPU cell)."""
    gpus = cell_gpus(resources)
    return -(-gpus // resources.gpus_per_node) if gpus else None
