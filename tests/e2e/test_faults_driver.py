"""The sweep driver meets a fault, on a real local Ray, judged by the final results table
(nothing lost, no finished cell rerun, no cell trained twice): killed mid-sweep then
``--resume``d, or rerun plainly; SIGTERM and Ctrl-C (SIGINT) then ``--resume``; killed
during curation. The other faults are in ``test_faults_cells.py`` and
``test_faults_cluster.py``; a Train worker killed mid-anneal is in
``tests/tune/test_recovery.py``."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pandas as pd
import pytest

from tests.e2e.faults import (
    alive_after,
    cell_files,
    interrupt_when,
    kill_group_when,
    start,
)

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1500)
def test_driver_killed_mid_sweep_resumes_without_rerunning_or_losing_a_cell(
    tmp_path, tools, resolve
):
    storage, out = tmp_path / "storage", tmp_path / "out"
    data = tools.spec(resolve, storage, tokens=(4096, 8192), seeds=(0, 1))  # 4 cells
    data["tracking"] = {"progress_seconds": 5}
    spec_path = tools.write(tmp_path / "spec.yaml", data)
    env = tools.env(tmp_path)
    args = ["sweep", str(spec_path), "--out", str(out), "--no-analyze"]

    first = start(tools, args, env, tmp_path / "first.log")
    deadline = time.time() + 1500
    try:
        while not cell_files(storage):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no cell finished in time"
            time.sleep(0.5)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver, mid-sweep, and its local Ray
        first.wait()
    time.sleep(1)  # a write in flight would have landed by now; there must be none
    before = cell_files(storage)
    assert 1 <= len(before) < 4
    assert not list((storage / "results" / "cells").glob(".*"))  # no torn temporary file

    resumed = tools.run([*args, "--resume"], env, timeout=1500)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming Tune experiment" in resumed.stderr
    summary = re.search(
        r"(\d+) finished, (\d+) failed, (\d+) reused .*?, (\d+) run now", resumed.stdout
    )
    assert summary, resumed.stdout
    finished, failed, reused, ran_now = map(int, summary.groups())
    assert (finished, failed, reused, ran_now) == (4, 0, len(before), 4 - len(before))

    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 4 and table["cell_id"].is_unique
    assert (table["status"] == "finished").all()
    assert (table["attempts"] == 1).all()
    after = cell_files(storage)
    for name, (blob, mtime) in before.items():
        assert after[name] == (blob, mtime), f"{name} was rewritten"
    # the resumed rows started after the kill; the kept ones before it
    kept = table["cell_id"].isin([n.removesuffix(".parquet") for n in before])
    assert table.loc[kept, "finished_at"].max() < table.loc[~kept, "attempt_started_at"].min()


@pytest.mark.timeout(1500)
def test_sigterm_and_sigint_stop_the_sweep_and_resume_continues(tmp_path, tools, resolve):
    storage, out = tmp_path / "storage", tmp_path / "out"
    # two cells of different lengths (16 and 96 steps): both still run when SIGTERM comes,
    # and the long one still runs when the short one has finished and SIGINT comes (two of
    # one length finish together on a two-core machine, leaving nothing to interrupt)
    data = tools.spec(resolve, storage, tokens=(16384, 98304), seeds=(0,))
    spec_path = tools.write(tmp_path / "spec.yaml", data)
    env = tools.env(tmp_path)
    args = ["sweep", str(spec_path), "--out", str(out), "--no-analyze"]

    # SIGTERM (a scheduler, `kill`) to the driver alone, once its anneals are running
    code, text, ray_processes = interrupt_when(
        tools,
        args,
        env,
        tmp_path / "sigterm.log",
        lambda text: "running 2 anneals" in text,
        lambda p: p.send_signal(signal.SIGTERM),
    )
    assert code == 143, text[-3000:]
    assert "annealscale: interrupted (SIGTERM)" in text and "Traceback" not in text
    assert ray_processes, "the sweep started no Ray processes?"
    assert not alive_after(ray_processes, 5), "Ray processes outlived the terminated sweep"
    # nothing written over the results: no (0-row) table, no provenance
    assert not (out / "results.parquet").exists() and not (out / "provenance.json").exists()

    # Ctrl-C (SIGINT to the whole foreground process group) after a cell finished
    code, text, ray_processes = interrupt_when(
        tools,
        [*args, "--resume"],
        env,
        tmp_path / "sigint.log",
        lambda text: bool(cell_files(storage)),
        lambda p: os.killpg(p.pid, signal.SIGINT),
    )
    assert code == 130, text[-3000:]
    assert "annealscale: interrupted (SIGINT)" in text and "Traceback" not in text
    assert not alive_after(ray_processes, 5), "Ray processes outlived the interrupted sweep"
    assert not (out / "results.parquet").exists()
    kept = cell_files(storage)

    done = tools.run([*args, "--resume"], env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 2 and table["cell_id"].is_unique
    assert (table["status"] == "finished").all()
    final = cell_files(storage)
    assert {k: final[k] for k in kept} == kept  # no finished cell rerun or rewritten
    assert json.loads((out / "provenance.json").read_text())["spec_hash"]


@pytest.mark.timeout(1500)
def test_driver_killed_then_a_plain_rerun_finishes_without_rerunning(tmp_path, tools, resolve):
    storage, out = tmp_path / "storage", tmp_path / "out"
    spec_path = tools.write(tmp_path / "spec.yaml", tools.spec(resolve, storage, seeds=(0, 1)))
    env = tools.env(tmp_path)
    args = ["sweep", str(spec_path), "--out", str(out), "--no-analyze"]
    proc = start(tools, args, env, tmp_path / "first.log")
    kill_group_when(proc, tmp_path / "first.log", lambda: bool(cell_files(storage)))
    time.sleep(1)
    before = cell_files(storage)
    assert len(before) == 1
    # the killed driver's claim on the other cell is stale at once (its process is gone)
    rerun = tools.run(args, env, timeout=1500)  # plain: no --resume
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "being trained by another sweep" not in rerun.stdout + rerun.stderr
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 2 and table["cell_id"].is_unique
    assert (table["status"] == "finished").all()
    after = cell_files(storage)
    assert {k: after[k] for k in before} == before


@pytest.mark.timeout(1500)
def test_killed_during_curation_a_rerun_curates_again_and_finishes(tmp_path, tools, resolve):
    storage, out = tmp_path / "storage", tmp_path / "out"
    sources = [{"name": "synthetic", "kind": "synthetic", "params": {"usd_per_token": 4e-6}}]
    data = tools.spec(resolve, storage, sources=sources, spends=(0.05, 0.2))
    spec_path = tools.write(tmp_path / "spec.yaml", data)
    env = tools.env(tmp_path)
    args = ["sweep", str(spec_path), "--out", str(out), "--no-analyze"]
    log = tmp_path / "first.log"
    proc = start(tools, args, env, log)
    kill_group_when(proc, log, lambda: "judging candidates" in log.read_text())
    assert not cell_files(storage)
    rerun = tools.run(args, env, timeout=1500)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    table = pd.read_parquet(out / "results.parquet").sort_values("curation_spend")
    assert len(table) == 2 and (table["status"] == "finished").all()
    assert (table["attempts"] == 1).all()
    # the pools are whole: a larger spend buys a larger pool, each within its spend
    assert table["unique_tokens"].is_monotonic_increasing and (table["unique_tokens"] > 0).all()
    assert (table["curation_cost"] <= table["curation_spend"] * (1 + 1e-9)).all()
