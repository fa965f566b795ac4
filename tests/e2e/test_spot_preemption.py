"""Spot capacity on a real multi-node Ray (`ray.cluster_utils.Cluster`): trial drivers on
the on-demand node, the cells' workers on a "spot" node that is preempted mid-anneal.

The head stands for the on-demand CPU group of k8s/: it alone carries the custom resource
``on_demand`` that the spec's drivers require. The spot node carries the (logical) GPU a
cell's worker needs, so the sweep's two cells run one after the other: a short one that
finishes on the spot node, then a long one. After the long cell's first checkpoint the
spot node is drained with reason PREEMPTION (what the autoscaler does on a cloud's reclaim
notice), the drained node is removed and a replacement spot node joins. With
``worker_failures: 0`` and ``trial_failures: 0`` any failure would fail the cell: it must
instead finish on the new node from its checkpoint, its driver never having left the
on-demand node, and the finished cell must be neither lost nor trained again.

The cluster lives in a child process and the CLI in another, so this session's shared
local Ray (``ray_local``) is never disconnected or joined to it.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import start_cluster, stop_cluster

pytestmark = pytest.mark.slow

STEPS = 128
"""Steps of the cell the preemption interrupts."""
SHORT_STEPS = 4
"""Steps of the cell that finishes before the preemption (no checkpoint of its own)."""
EVERY = 16
TOKENS_PER_STEP = 16 * 64  # the e2e spec's batch_size x seq_len
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
    # the node goes before its replacement joins, as a reclaimed spot node does: had it
    # stayed while the replacement started (seconds on a busy machine), the interrupted
    # cell could finish on it
    cluster.remove_node(spot, allow_graceful=False)
    replacement = cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    print(accepted, why or "-", replacement.node_id, flush=True)
sys.stdin.read()  # until the test closes our stdin
cluster.shutdown()
"""


def _registered_checkpoints(run_dir: Path) -> int:
    """Checkpoints Ray Train's controller has registered for one run (a directory alone is
    not enough: a report still queued in a worker is lost with its node)."""
    try:
        snapshot = (run_dir / "checkpoint_manager_snapshot.json").read_text()
        return len(json.loads(snapshot).get("checkpoint_results", []))
    except (OSError, ValueError):
        return 0  # not written yet, or being rewritten


def _files(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``directory``: relative path -> (size, mtime in ns)."""
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _trial_results(storage: Path, identity: str) -> list[bytes]:
    """The ``result.json`` of every Tune trial that ran cell ``identity``: a trial run
    again, or restarted and skipped, appends reports to it."""
    trials = sorted((storage / "tune").glob(f"*/run_cell_*cell_id={identity}_*"))
    return [(trial / "result.json").read_bytes() for trial in trials]


def _interrupted_cell(storage: Path) -> str | None:
    """A cell with a registered checkpoint and no finished row, once another cell has a
    finished row; else None."""
    finished = {p.stem for p in (storage / "results" / "cells").glob("*.parquet")}
    if not finished:
        return None
    for run in sorted((storage / "train").glob("cell-*")):
        identity = run.name.removeprefix("cell-")
        if identity not in finished and _registered_checkpoints(run) >= 1:
            return identity
    return None


@pytest.mark.timeout(1500)
def test_preempted_spot_node_costs_a_restart_from_the_checkpoint_never_the_driver(
    tmp_path, tools, resolve
):
    env = tools.env(tmp_path)
    storage = tmp_path / "storage"
    # a short cell, then a long one: the spot node has one (logical) GPU for both
    tokens = (SHORT_STEPS * TOKENS_PER_STEP, STEPS * TOKENS_PER_STEP)
    data = tools.spec(resolve, storage, tokens=tokens)
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
    cluster = start_cluster(CLUSTER, env)
    preempted: dict = {}

    def preempt_once_a_cell_finished_and_another_checkpointed():
        deadline = time.time() + 1200
        while time.time() < deadline and not preempted.get("stop"):
            interrupted = _interrupted_cell(storage)
            if interrupted is not None:
                # what must survive the preemption untouched: the finished cells' rows and
                # their Train runs, as they were before the node went
                preempted["rows"] = {
                    p.stem: (p.read_bytes(), p.stat().st_mtime_ns)
                    for p in (storage / "results" / "cells").glob("*.parquet")
                }
                preempted["runs"] = {
                    identity: _files(storage / "train" / f"cell-{identity}")
                    for identity in preempted["rows"]
                }
                preempted["trials"] = {
                    identity: _trial_results(storage, identity) for identity in preempted["rows"]
                }
                preempted["interrupted"] = interrupted
                cluster.stdin.write("preempt\n")
                cluster.stdin.flush()
                preempted["reply"] = cluster.stdout.readline().split()
                return
            time.sleep(0.05)

    try:
        address, head_id, spot_id = cluster.stdout.readline().split()
        watcher = threading.Thread(
            target=preempt_once_a_cell_finished_and_another_checkpointed, daemon=True
        )
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
        stop_cluster(cluster)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reply" in preempted, "no cell finished before another one checkpointed"
    accepted, _, replacement_id = preempted["reply"]
    assert accepted == "True"  # Ray accepted the preemption drain

    rows = pd.read_parquet(tmp_path / "out" / "results.parquet").set_index("cell_id")
    assert len(rows) == 2
    assert set(rows["status"]) == {"finished"}  # every cell finished
    assert all(rows["driver_node"] == head_id)  # no driver ever left the on-demand node
    assert all(rows["attempts"] == 1)  # no trial failed: only the long cell's worker moved

    # the cell finished before the preemption: neither lost nor trained again
    (short,) = preempted["rows"]
    assert rows.loc[short, "steps"] == SHORT_STEPS
    assert rows.loc[short, "worker_node"] == spot_id  # trained on the node that went
    assert rows.loc[short, "worker_restarts"] == 0
    row_file = storage / "results" / "cells" / f"{short}.parquet"
    assert (row_file.read_bytes(), row_file.stat().st_mtime_ns) == preempted["rows"][short]
    # one Tune trial, which reported nothing after the preemption
    assert len(preempted["trials"][short]) == 1
    assert _trial_results(storage, short) == preempted["trials"][short]
    # its Train run is as it was: no second run, no checkpoint written after the preemption
    assert _files(storage / "train" / f"cell-{short}") == preempted["runs"][short]
    assert sorted(p.name for p in (storage / "train").iterdir() if short in p.name) == [
        f"cell-{short}"
    ]

    # the interrupted cell: finished on the new spot node from a checkpoint taken before
    # the preemption, not from the base model
    long = preempted["interrupted"]
    assert set(rows.index) == {short, long}
    assert rows.loc[long, "worker_node"] == replacement_id != spot_id
    assert rows.loc[long, "worker_restarts"] == 1
    assert EVERY <= rows.loc[long, "resumed_from_step"] < STEPS
    assert rows.loc[long, "resumed_from_step"] % EVERY == 0
    assert rows.loc[long, "steps"] == STEPS
