"""Where one cell's Ray Train workers go: packed onto one node when they fit.

A cell's ranks talk over NVLink only when they share a node; spread over pods they talk
over the pod network. With ``resources.gpus_per_node`` set (the GPUs of one worker pod or
VM), a cell that fits one node gets ``STRICT_PACK`` (all ranks on one node, or it waits
for one), and a larger cell, which the spec makes use whole nodes, gets ``PACK`` (nodes
filled one at a time). Without it Ray's default, ``PACK``, applies.
"""

from __future__ import annotations


def cell_gpus(resources) -> int:
    """GPUs one cell reserves: workers x GPUs per worker (`tune.spec.ResourcesSpec`)."""
    return resources.num_workers * resources.gpus_per_worker


def placement_strategy(resources) -> str:
    """The Ray placement-group strategy for one cell's Train workers."""
    per_node = resources.gpus_per_node
    gpus = cell_gpus(resources)
    if per_node and 0 < gpus <= per_node:
        return "STRICT_PACK"
    return "PACK"


def nodes_per_cell(resources) -> int | None:
    """Whole nodes one cell occupies, when the node size is known and the cell uses GPUs."""
    per_node = resources.gpus_per_node
    gpus = cell_gpus(resources)
    if not per_node or not gpus:
        return None
    return -(-gpus // per_node)
