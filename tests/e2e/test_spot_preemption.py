"""Spot capacity on a real multi-node Ray (`ray.cluster_utils.Cluster`): trial drivers on
the on-demand node, the cell's worker on a "spot" node that is preempted mid-anneal.

The head stands for the on-demand CPU group of k8s/: it alone carries the custom resource
``on_demand`` that the spec's drivers require. The spot node carries the (logical) GPU the
cell's worker needs. After the cell's first checkpoint the spot node is drained with
reason PREEMPTION (what the autoscaler does on a cloud's reclaim notice), a replacement
spot node joins, and the drained node is removed. With ``worker_failures: 0`` and
``trial_failures: 0`` any failure would fail the cell: it must instead finish on the new
node from its checkpoint, its driver never having left the on-demand node.

The cluster lives in a child process and the CLI in another, so this session's shared
local Ray (``ray_local``) is never disconnected or joined to it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

STEPS = 128
EVERY = 16
CLUSTER = """
import sys, time
import ray
from ray.cluster_utils import Cluster
from ray.core.generated import autoscaler_pb2

cluster = Cluster(
    initialize_head=True,
    head_node_args={"num_cpus": 2, "resources": {"on_demand": 4}},
)
spot = cluster.add_node(num_cpus=2, num_gpus=1)
cluster.wait_for_nodes()
print(cluster.address, cluster.head_node.node_id, spot.node_id, flush=True)
if sys.stdin.readline().strip() == "preempt":
    gcs = ray._raylet.GcsClient(address=cluster.address)
    accepted, why = gcs.drain_node(
        spot.node_id,
        autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
        "spot instance reclaimed (test)",
        int(time.time() * 1000) + 5000,
    )
    replacement = cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    time.sleep(2)
    cluster.remove_node(spot, allow_graceful=False)
    print(accepted, why or "-", replacement.node_id, flush=True)
sys.stdin.read()  # until the test closes our stdin
cluster.shutdown()
"""


def _registered_checkpoints(train_root: Path) -> int:
    """Checkpoints Ray Train's controller has registered (a directory alone is not enough:
    a report still queued in a worker is lost with its node)."""
    count = 0
    for snapshot in train_root.glob("cell-*/checkpoint_manager_snapshot.json"):
        try:
            count += len(json.loads(snapshot.read_text()).get("checkpoint_results", []))
        except (OSError, ValueError):
            continue  # being rewritten
    return count


def test_preempted_spot_node_costs_a_restart_from_the_checkpoint_never_the_driver(
    tmp_path, tools, resolve
):
    env = tools.env(tmp_path)
    storage = tmp_path / "storage"
    data = tools.spec(resolve, storage, tokens=(STEPS * 16 * 64,))  # one cell, STEPS steps
    data["resources"] = {
        "gpus_per_worker": 1,
        "torch_backend": "gloo",  # logical GPUs: the nodes declare them, gloo trains on CPU
        "gpus_per_node": 1,
        "max_concurrent_trials": 1,
        "driver_resources": {"on_demand": 1},
    }
    data["checkpoint"] = {"every_steps": EVERY, "keep": 1}
    data["retries"] = {"worker_failures": 0, "trial_failures": 0, "preemption_failures": -1}
    spec_path = tools.write(tmp_path / "spec.yaml", data)
    cluster = subprocess.Popen(
        [sys.executable, "-c", CLUSTER],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    preempted: dict = {}

    def preempt_after_first_checkpoint():
        deadline = time.time() + 1200
        while time.time() < deadline and not preempted.get("stop"):
            if _registered_checkpoints(storage / "train") >= 1:
                cluster.stdin.write("preempt\n")
                cluster.stdin.flush()
                preempted["reply"] = cluster.stdout.readline().split()
                return
            time.sleep(0.05)

    try:
        address, head_id, spot_id = cluster.stdout.readline().split()
        watcher = threading.Thread(target=preempt_after_first_checkpoint, daemon=True)
        watcher.start()
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
        preempted["stop"] = True
        watcher.join(timeout=60)
    finally:
        cluster.stdin.close()
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            cluster.kill()
    assert done.returncode == 0, done.stderr[-3000:]
    accepted, _, replacement_id = preempted["reply"]
    assert accepted == "True"  # Ray accepted the preemption drain

    (row,) = pd.read_parquet(tmp_path / "out" / "results.parquet").to_dict("records")
    assert row["status"] == "finished"
    assert row["attempts"] == 1  # the trial never failed: only its workers restarted
    assert row["driver_node"] == head_id  # the driver stayed on the on-demand node
    assert row["worker_node"] == replacement_id != spot_id  # finished on the new spot node
    assert row["worker_restarts"] == 1
    # resumed from a checkpoint taken before the preemption, not from the base model
    assert EVERY <= row["resumed_from_step"] < STEPS
    assert row["resumed_from_step"] % EVERY == 0
    assert row["steps"] == STEPS
