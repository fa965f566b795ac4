"""Multi-node sweeps refuse a storage path some node cannot read.

Every node of a test cluster runs on this machine and so shares its filesystem: a real
"invisible" path cannot be produced here. The tests therefore check (1) the decision on
its own, (2) the real per-node read on real Ray nodes, both for a marker that exists and
for one that no node can see (removed before the read, as on a node-local disk of another
machine), and (3) that the whole check passes on a real multi-node cluster with shared
storage and cleans up after itself.
"""

from __future__ import annotations

import socket
import uuid

import pytest

from annealscale.cluster.storage_check import (
    check_shared_storage,
    is_local_path,
    needs_check,
    nodes_seeing,
    storage_problem,
)
from annealscale.core.errors import AnnealscaleError


@pytest.mark.parametrize(
    ("path", "local"),
    [("/mnt/shared", True), ("runs/storage", True), ("s3://b/x", False), ("gs://b", False)],
)
def test_local_paths_are_told_from_uris(path, local):
    assert is_local_path(path) is local


def test_only_local_paths_on_several_nodes_are_checked():
    assert needs_check("/mnt/x", 2)
    assert not needs_check("/mnt/x", 1)
    assert not needs_check("s3://bucket/x", 4)


def test_problem_names_the_blind_nodes_in_one_line():
    seen = {"10.0.0.1 aaaa": True, "10.0.0.2 bbbb": False, "10.0.0.3 cccc": False}
    problem = storage_problem("/data/storage", seen)
    assert problem.startswith("storage_path /data/storage: not visible from 2 of 3 Ray nodes")
    assert "10.0.0.2 bbbb, 10.0.0.3 cccc" in problem and "10.0.0.1" not in problem
    assert "\n" not in problem
    assert storage_problem("/data/storage", {"a": True, "b": True}) is None


def test_one_node_is_not_checked_and_nothing_is_written(ray_local, tmp_path):
    storage = tmp_path / "storage"
    check_shared_storage(str(storage))
    assert not storage.exists()


def test_a_node_reads_a_marker_it_can_see_and_not_one_it_cannot(ray_local, tmp_path):
    import ray

    node = ray.get_runtime_context().get_node_id()
    marker = tmp_path / "marker"
    marker.write_text("abc")
    assert nodes_seeing(marker, "abc", [node]) == {node: True}
    assert nodes_seeing(marker, "other content", [node]) == {node: False}
    marker.unlink()
    assert nodes_seeing(marker, "abc", [node]) == {node: False}


@pytest.mark.slow
def test_on_a_multi_node_cluster(tmp_path):
    """Three real nodes (ray.cluster_utils.Cluster) on this machine's shared filesystem."""
    import ray
    from ray.cluster_utils import Cluster

    from annealscale.cluster.local import connect

    was_running = ray.is_initialized()
    ray.shutdown()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dashboard_port = s.getsockname()[1]  # not 8265: another Ray here may hold it
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "include_dashboard": False,
            "dashboard_port": dashboard_port,
        },
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 3

        storage = tmp_path / "storage"
        check_shared_storage(str(storage))  # shared here: passes
        assert storage.is_dir() and list(storage.iterdir()) == []  # marker removed

        missing = storage / f".annealscale-visible-{uuid.uuid4().hex[:12]}"
        seen = nodes_seeing(missing, "x", nodes)
        assert seen == dict.fromkeys(nodes, False)
        with pytest.raises(AnnealscaleError, match="not visible from 3 of 3 Ray nodes"):
            problem = storage_problem(str(storage), seen)
            raise AnnealscaleError(problem)
    finally:
        ray.shutdown()
        cluster.shutdown()
        if was_running:
            connect(num_cpus=4)  # give the session's shared `ray_local` back
