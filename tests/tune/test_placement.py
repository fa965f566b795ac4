"""A cell's Train workers are packed onto one node when they fit, and a spec cell that
neither fits a node nor fills whole nodes is refused with one line."""

from __future__ import annotations

import pytest

from annealscale.core.errors import SpecError
from annealscale.core.spec_model import from_mapping
from annealscale.tune.placement import nodes_per_cell, placement_strategy
from annealscale.tune.spec import ResourcesSpec


def _res(**fields) -> ResourcesSpec:
    return from_mapping(ResourcesSpec, fields)


@pytest.mark.parametrize(
    ("fields", "strategy", "nodes"),
    [
        ({"num_workers": 8, "gpus_per_worker": 1, "gpus_per_node": 8}, "STRICT_PACK", 1),
        ({"num_workers": 2, "gpus_per_worker": 2, "gpus_per_node": 8}, "STRICT_PACK", 1),
        ({"num_workers": 16, "gpus_per_worker": 1, "gpus_per_node": 8}, "PACK", 2),
        ({"num_workers": 4, "gpus_per_worker": 1}, "STRICT_PACK", 1),  # 8 GPUs by default
        ({"num_workers": 2, "gpus_per_worker": 1, "gpus_per_node": 1}, "PACK", 2),
        ({"num_workers": 2, "gpus_per_node": 8}, "PACK", None),  # CPU cell
    ],
)
def test_a_cell_that_fits_a_node_is_packed_strictly(fields, strategy, nodes):
    res = _res(**fields)
    assert placement_strategy(res) == strategy
    assert nodes_per_cell(res) == nodes


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"num_workers": 12, "gpus_per_worker": 1, "gpus_per_node": 8}, "num_workers"),
        ({"num_workers": 3, "gpus_per_worker": 4, "gpus_per_node": 8}, "num_workers"),
        ({"num_workers": 1, "gpus_per_worker": 16, "gpus_per_node": 8}, "gpus_per_worker"),
        ({"num_workers": 1, "gpus_per_worker": 1, "gpus_per_node": 0}, "gpus_per_node"),
    ],
)
def test_a_cell_neither_within_a_node_nor_whole_nodes_is_refused(fields, path):
    with pytest.raises(SpecError) as caught:
        _res(**fields)
    assert caught.value.path.endswith(path)
    assert "\n" not in str(caught.value)
