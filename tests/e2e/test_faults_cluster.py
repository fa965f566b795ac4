"""The cluster meets a fault, on a real ``ray.cluster_utils.Cluster``, judged by the final
results table: two sweeps of one spec at once on one Ray; a whole worker node removed
mid-anneal; a cell no node can hold."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from annealscale.tune.spec import parse_spec
from annealscale.tune.sweep import run_sweep
from tests.e2e.faults import (
    ONE_NODE_CLUSTER,
    WORKER_NODE_CLUSTER,
    start,
)
from tests.helpers import start_cluster, stop_cluster

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1500)
def test_two_sweeps_of_one_spec_at_once_train_each_cell_once(tmp_path, tools, resolve):
    storage = tmp_path / "storage"
    data = tools.spec(resolve, storage, seeds=(0, 1))  # 2 cells
    spec_path = tools.write(tmp_path / "spec.yaml", data)
    env = tools.env(tmp_path)
    # one Ray for both (two teams' sweeps on one cluster); each sweep is its own driver

    cluster = start_cluster(ONE_NODE_CLUSTER, env)
    try:
        address = cluster.stdout.readline().strip()
        assert address, "the cluster did not start"
        procs = []
        for name in ("a", "b"):
            log = (tmp_path / f"{name}.log").open("w")
            out = str(tmp_path / f"out-{name}")
            args = ["sweep", str(spec_path), "--out", out, "--no-analyze", "--address", address]
            procs.append(
                subprocess.Popen(
                    tools.cli(*args),
                    env=env,
                    cwd=tools.repo,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for proc, name in zip(procs, "ab", strict=True):
            assert proc.wait(timeout=1500) == 0, (tmp_path / f"{name}.log").read_text()[-2000:]
    finally:
        stop_cluster(cluster)
    logs = [(tmp_path / f"{name}.log").read_text() for name in ("a", "b")]
    tables = [pd.read_parquet(tmp_path / f"out-{name}" / "results.parquet") for name in "ab"]
    for table in tables:
        assert len(table) == 2 and (table["status"] == "finished").all()
    pd.testing.assert_frame_equal(tables[0], tables[1])  # one row per cell, shared
    # each cell's row was written once, by one of the sweeps: no cell trained twice
    finished_lines = [ln for text in logs for ln in text.splitlines() if " finished: " in ln]
    assert len(finished_lines) == 2, finished_lines
    assert not any("already finished; its stored row is kept" in text for text in logs)
    assert not list((storage / "results" / "claims").glob("*.json"))  # every claim released


@pytest.mark.timeout(1500)
def test_a_removed_worker_node_costs_a_restart_from_the_checkpoint_not_the_cell(
    tmp_path, tools, resolve
):

    from tests.tune.test_recovery import _registered_checkpoints

    storage, out = tmp_path / "storage", tmp_path / "out"
    data = tools.spec(resolve, storage, tokens=(32768,))  # 32 steps
    data["checkpoint"] = {"every_steps": 4}
    data["resources"] = {"driver_resources": {"head": 0.001}}
    data["retries"] = {"worker_failures": 2, "trial_failures": 1}
    spec_path = tools.write(tmp_path / "spec.yaml", data)
    env = tools.env(tmp_path)
    cluster = start_cluster(WORKER_NODE_CLUSTER, env)
    try:
        address = cluster.stdout.readline().strip()
        assert address, "the cluster did not start"
        args = ["sweep", str(spec_path), "--out", str(out), "--no-analyze", "--address", address]
        proc = start(tools, args, env, tmp_path / "sweep.log")
        deadline = time.time() + 1200
        while not _registered_checkpoints(storage / "train"):
            assert proc.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint in time"
            time.sleep(0.2)
        cluster.stdin.write("remove\n")
        cluster.stdin.flush()
        assert cluster.stdout.readline().strip() == "removed"
        assert proc.wait(timeout=1500) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    finally:
        if "proc" in locals() and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        stop_cluster(cluster)
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 1
    row = table.iloc[0]
    assert row["status"] == "finished"
    assert row["start_step"] > 0 or row["resumed_from_step"] > 0  # not from the base model
    assert row["train_tokens"] == 32768


def test_an_unschedulable_cell_is_refused_at_start_and_out_is_left_alone(
    ray_local, tmp_path, tools, resolve
):
    from annealscale.core.errors import AnnealscaleError

    data = tools.spec(resolve, tmp_path / "storage")
    data["resources"] = {"cpus_per_worker": 64}
    out = tmp_path / "out"
    out.mkdir()
    (out / "provenance.json").write_text("{}")
    started = time.time()
    with pytest.raises(AnnealscaleError) as caught:
        run_sweep(parse_spec(data), out, resolve=resolve)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("resources: no node can hold one worker")
    assert "1 worker(s) x {CPU: 64}" in message and "largest of 1 node(s) has {CPU: 4" in message
    assert time.time() - started < 60  # refused before curation, not after a wait
    assert (out / "provenance.json").read_text() == "{}"
    assert not (tmp_path / "storage" / "results" / "claims").exists()  # no trial started
