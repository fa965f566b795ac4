"""Fault test: the process running an anneal SIGKILLed mid-anneal on a real local Ray.

A single-worker cell anneals in its warm Tune trial process (`tune.warm`): the kill fails
the trial and Tune retries it in a new process, which resumes from the run's last
checkpoint (a multi-worker cell's Train worker would be restarted by Train's
``FailureConfig`` instead). The cell must finish from that checkpoint with the same token
count as an uninterrupted run of the same cell and a final domain bits per byte within 2%
of it, and its results row must record the restart.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from annealscale.tune.spec import parse_spec
from annealscale.tune.sweep import run_sweep
from tests.helpers import TOKENS_PER_STEP, sweep_spec

pytestmark = pytest.mark.slow

STEPS = 128
EVERY = 16


def one_cell_spec(storage: str) -> dict:
    return sweep_spec(
        storage,
        name="recovery",
        grid={"curation_spend": [0.2], "train_tokens": [STEPS * TOKENS_PER_STEP]},
        checkpoint={"every_steps": EVERY},
    )


ANNEAL_ACTORS = ("RayTrainWorker", "ImplicitFunc")
"""Ray actor classes an anneal runs in: a Train worker, or a warm Tune function trial
(named ``ImplicitFunc`` or ``wrap_function.<locals>.ImplicitFunc``)."""


class WorkerKiller(threading.Thread):
    """Waits until the anneal has stored ``after`` checkpoints, then SIGKILLs the process
    running it (found through Ray's state API) once.

    ``actor_classes`` names the processes that may be killed: a multi-worker cell's Tune
    trial process only drives Ray Train, so killing it instead of a Train worker would test
    a different fault."""

    def __init__(
        self, train_root: Path, after: int, actor_classes: tuple[str, ...] = ANNEAL_ACTORS
    ):
        super().__init__(daemon=True)
        self.train_root = train_root
        self.after = after
        self.actor_classes = actor_classes
        self.killed_pid: int | None = None
        self.checkpoints_seen = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self):
        try:
            self._watch()
        except BaseException as err:  # surfaced by the test, not lost in the thread
            self.error = err

    def _watch(self):
        from ray._private.state import actors

        while not self.stop.is_set():
            checkpoints = _registered_checkpoints(self.train_root)
            if len(checkpoints) >= self.after:
                # the GCS actor table of the connected cluster (the public state API needs
                # the dashboard, which the test cluster does not run)
                workers = [
                    a
                    for a in actors().values()
                    if a["ActorClassName"].rsplit(".", 1)[-1] in self.actor_classes
                    and a["State"] == "ALIVE"
                ]
                if workers:
                    self.checkpoints_seen = len(checkpoints)
                    self.killed_pid = int(workers[0]["Pid"])
                    os.kill(self.killed_pid, signal.SIGKILL)
                    return
            time.sleep(0.02)


def _registered_checkpoints(train_root: Path) -> list[str]:
    """Checkpoints stored whole for the run: marked complete by a warm trial, or registered
    by Ray Train's controller (a directory on disk alone is not enough: a report still
    queued in a killed worker is lost with it)."""
    names = [p.parent.name for p in train_root.glob("cell-*/step-*/_complete")]
    for snapshot in train_root.glob("cell-*/checkpoint_manager_snapshot.json"):
        try:
            results = json.loads(snapshot.read_text()).get("checkpoint_results", [])
        except (OSError, ValueError):
            continue  # being rewritten
        names += [r["checkpoint_dir_name"] for r in results]
    return names


@pytest.fixture(scope="module")
def runs(ray_local, tiny_assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("recovery")
    storage = root / "storage"
    spec = parse_spec(one_cell_spec(str(storage)))
    results = {}
    for name in ("uninterrupted", "killed"):
        # the two runs share curated pools and packed data, not their Train and Tune runs
        for runs_dir in ("train", "tune", "results"):
            shutil.rmtree(storage / runs_dir, ignore_errors=True)
        killer = None
        if name == "killed":
            killer = WorkerKiller(storage / "train", after=1)
            killer.start()
        outcome = run_sweep(spec, root / name, resolve=tiny_assets.resolve)
        if killer is not None:
            killer.stop.set()
            killer.join()
        table = pd.read_parquet(outcome.results_path)
        results[name] = (outcome, table, killer)
    return results


def test_killed_worker_cell_finishes_from_its_checkpoint(runs):
    outcome, table, killer = runs["killed"]
    assert killer.error is None, killer.error
    assert killer.killed_pid is not None, "the worker was never killed"
    assert outcome.finished == 1 and outcome.failed == 0
    row = table.iloc[0]
    assert row["status"] == "finished"
    assert row["worker_restarts"] == 1
    # the warm trial's process was the one killed: one Tune retry, from the checkpoint
    assert row["attempts"] == 2
    # resumed from a checkpoint taken before the kill, not from the base model
    assert row["resumed_from_step"] >= EVERY
    assert row["resumed_from_step"] % EVERY == 0
    assert row["resumed_from_step"] < STEPS
    assert row["steps"] == STEPS


def test_restarted_cell_matches_an_uninterrupted_run(runs):
    _, reference, _ = runs["uninterrupted"]
    _, killed, _ = runs["killed"]
    ref, got = reference.iloc[0], killed.iloc[0]
    assert ref["worker_restarts"] == 0 and ref["resumed_from_step"] == 0
    assert got["train_tokens"] == ref["train_tokens"] == STEPS * 8 * 64
    assert got["domain_tokens"] == ref["domain_tokens"]
    assert got["replay_tokens"] == ref["replay_tokens"]
    assert got["domain_bpb"] == pytest.approx(ref["domain_bpb"], rel=0.02)
    assert got["general_bpb"] == pytest.approx(ref["general_bpb"], rel=0.02)
    # the anneal learned something, so matching bpb is not matching the base model
    assert ref["domain_bpb"] < ref["base_domain_bpb"] - 0.05
