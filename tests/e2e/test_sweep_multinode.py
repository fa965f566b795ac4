"""A sweep on a real three-node Ray cluster (`ray.cluster_utils.Cluster`, one logical GPU
per node) through ``annealscale sweep --address``: the anneals spread over the nodes and
never more run at once than there are GPUs.

The cluster lives in a child process and the CLI in another, so this session's shared
local Ray (``ray_local``) is never disconnected or joined to it.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.helpers import start_cluster, stop_cluster

pytestmark = pytest.mark.slow

NODES = 3
CLUSTER = f"""
import sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 2, "num_gpus": 1}})
for _ in range({NODES} - 1):
    cluster.add_node(num_cpus=2, num_gpus=1)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()  # until the test closes our stdin
cluster.shutdown()
"""


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_sweep_spreads_over_nodes_within_their_gpus(tmp_path, tools, resolve):
    env = tools.env(tmp_path)
    data = tools.spec(resolve, tmp_path / "storage", seeds=(0, 1, 2, 3))  # 4 cells
    # Logical GPUs: the nodes declare them, the workers reserve them, gloo trains on CPU.
    data["resources"] = {"gpus_per_worker": 1, "torch_backend": "gloo"}
    spec_path = tools.write(tmp_path / "spec.yaml", data)
    cluster = start_cluster(CLUSTER, env)
    try:
        address = cluster.stdout.readline().strip()
        assert address, "the cluster did not start"
        done = tools.run(
            [
                "sweep",
                str(spec_path),
                "--out",
                str(tmp_path / "out"),
                "--no-analyze",
                "--address",
                address,
            ],
            env,
            timeout=1500,
        )
    finally:
        stop_cluster(cluster)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "at most 3 at a time" in done.stderr

    table = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert len(table) == 4 and (table["status"] == "finished").all()
    assert table["worker_node"].nunique() >= 2
    intervals = list(zip(table["attempt_started_at"], table["attempt_finished_at"], strict=True))
    assert 2 <= _max_overlap(intervals) <= NODES
