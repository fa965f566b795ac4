"""Faults a long sweep meets, injected into real sweeps on a real local Ray (or a real
`ray.cluster_utils.Cluster`), each judged by the final results table: nothing lost, no
finished cell rerun, no cell trained twice.

The matrix: the sweep driver killed mid-sweep then resumed, or rerun plainly; SIGTERM and
Ctrl-C (SIGINT) then ``--resume``; a cell that always fails; a diverged cell; two specs
sharing one storage path, and two sweeps of one spec at once; a full disk on the storage
path (a small tmpfs; skipped where the machine cannot mount); a truncated checkpoint; a
kill during curation; a whole worker node removed; a cell no node can hold. A Train
worker killed mid-anneal is in ``tests/tune/test_recovery.py``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from annealscale.tune.spec import parse_spec
from annealscale.tune.sweep import run_sweep

pytestmark = pytest.mark.slow


def _event_tags(path: Path) -> set[str]:
    """Scalar tags in a TensorBoard event file (TFRecord framing: length, CRC, data, CRC)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    blob, tags, offset = path.read_bytes(), set(), 0
    while offset < len(blob):
        (length,) = struct.unpack_from("<Q", blob, offset)
        event = Event.FromString(blob[offset + 12 : offset + 12 + length])
        tags |= {value.tag for value in event.summary.value}
        offset += 12 + length + 4
    return tags


def _cell_files(storage: Path) -> dict[str, tuple[bytes, int]]:
    cells = storage / "results" / "cells"
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in cells.glob("*.parquet")}


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

    log = (tmp_path / "first.log").open("w")
    # Its own session: the driver and the local Ray it starts form one process group.
    first = subprocess.Popen(
        tools.cli(*args),
        env=env,
        cwd=tools.repo,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 1500
    try:
        while not _cell_files(storage):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no cell finished in time"
            time.sleep(0.5)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver, mid-sweep, and its local Ray
        first.wait()
    time.sleep(1)  # a write in flight would have landed by now; there must be none
    before = _cell_files(storage)
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
    after = _cell_files(storage)
    for name, (blob, mtime) in before.items():
        assert after[name] == (blob, mtime), f"{name} was rewritten"
    # the resumed rows started after the kill; the kept ones before it
    kept = table["cell_id"].isin([n.removesuffix(".parquet") for n in before])
    assert table.loc[kept, "finished_at"].max() < table.loc[~kept, "attempt_started_at"].min()


def test_cells_that_always_fail_are_recorded_after_retries_and_the_rest_finish(
    ray_local, tmp_path, tools, resolve
):
    from annealscale.tune.cells import expand_grid
    from annealscale.tune.prepare import inputs_identity

    # Two deterministic faults. "tiny" is a licensed corpus of one short document: too
    # few tokens for one training window, so its cells fail while being prepared. The
    # textbook cell of 8192 tokens finds its Train run directory taken by a file (storage
    # gone bad), so every attempt of its trial fails and Tune retries it.
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text(json.dumps({"text": "x = 1"}) + "\n")
    sources = [
        {
            "name": "textbook",
            "kind": "as_is",
            "params": {"path": resolve("demo:math_train"), "usd_per_token": 1e-5},
        },
        {"name": "tiny", "kind": "as_is", "params": {"path": str(tiny), "usd_per_token": 1e-5}},
    ]
    storage = tmp_path / "storage"
    data = tools.spec(resolve, storage, sources=sources, tokens=(4096, 8192))
    data["retries"] = {"trial_failures": 1, "worker_failures": 0}
    spec = parse_spec(data)
    inputs = inputs_identity(spec, resolve)
    cells = {
        (c.source, c.train_tokens): c for c in expand_grid(spec, inputs.shared, inputs.per_source)
    }
    blocked = cells[("textbook", 8192)].identity
    (storage / "train").mkdir(parents=True)
    (storage / "train" / f"cell-{blocked}").write_text("not a directory")

    outcome = run_sweep(spec, tmp_path / "out", resolve=resolve)
    assert (outcome.finished, outcome.failed) == (1, 3)
    table = pd.read_parquet(outcome.results_path).set_index("cell_id")
    good = table.loc[cells[("textbook", 4096)].identity]
    assert good["status"] == "finished" and pd.isna(good["error"]) and good["attempts"] == 1
    assert good["domain_bpb"] < good["base_domain_bpb"]
    bad = table.loc[blocked]
    assert bad["status"] == "failed" and bad["attempts"] == 2  # 1 + trial_failures
    assert f"cell-{blocked}" in bad["error"]
    for tokens in (4096, 8192):
        row = table.loc[cells[("tiny", tokens)].identity]
        assert row["status"] == "failed" and row["attempts"] == 1
        assert "packing produced no windows" in row["error"]
    assert not (storage / "results" / "cells" / f"{blocked}.parquet").exists()

    # The next sweep retries failed cells and counts their attempts on; the finished one
    # is neither rerun nor rewritten.
    before = _cell_files(storage)
    again = run_sweep(spec, tmp_path / "out", resolve=resolve)
    assert (again.finished, again.failed, again.skipped, again.ran) == (1, 3, 1, 3)
    table = pd.read_parquet(again.results_path).set_index("cell_id")
    assert table.loc[blocked, "attempts"] == 4
    assert table.loc[cells[("tiny", 4096)].identity, "attempts"] == 2
    assert _cell_files(storage) == before


def test_specs_sharing_a_storage_path_never_touch_each_others_results(
    ray_local, tmp_path, tools, resolve
):
    storage = tmp_path / "storage"
    first = parse_spec(tools.spec(resolve, storage, name="first"))
    # The second spec adds a budget and logs to TensorBoard: its first cell is the same
    # cell (same identity) as the first spec's, the other is new.
    data = tools.spec(resolve, storage, name="second", tokens=(4096, 8192))
    data["tracking"] = {"tensorboard": True}
    second = parse_spec(data)

    a = run_sweep(first, tmp_path / "out-first", resolve=resolve)
    assert (a.finished, a.ran) == (1, 1)
    kept = _cell_files(storage)
    table_a = pd.read_parquet(a.results_path)

    b = run_sweep(second, tmp_path / "out-second", resolve=resolve)
    assert (b.finished, b.skipped, b.ran) == (2, 1, 1)  # the shared cell is not rerun
    table_b = pd.read_parquet(b.results_path)
    assert set(table_a["cell_id"]) < set(table_b["cell_id"])
    after = _cell_files(storage)
    assert {k: after[k] for k in kept} == kept
    tune_dirs = {p.name.rsplit("-", 1)[0]: p for p in (storage / "tune").iterdir()}
    assert not list(tune_dirs["first"].rglob("events.out.tfevents*"))
    events = list(tune_dirs["second"].rglob("events.out.tfevents*"))
    assert len(events) == 1
    assert "ray/tune/domain_bpb" in _event_tags(events[0])

    # An unchanged spec, run again, runs no cell and rewrites nothing.
    again = run_sweep(first, tmp_path / "out-first", resolve=resolve)
    assert (again.ran, again.skipped) == (0, 1)
    pd.testing.assert_frame_equal(pd.read_parquet(again.results_path), table_a)
    assert _cell_files(storage) == after


def test_a_diverged_cell_is_failed_retried_and_named_by_analyze(
    ray_local, tmp_path, tools, resolve, capsys
):
    from annealscale.cluster.cli import main

    storage = tmp_path / "storage"
    data = tools.spec(resolve, storage)
    data["train"] = {**data["train"], "weight_decay": float("inf")}
    data["retries"] = {"trial_failures": 1, "worker_failures": 0}
    outcome = run_sweep(parse_spec(data), tmp_path / "out", resolve=resolve)
    assert (outcome.finished, outcome.failed) == (0, 1)
    row = pd.read_parquet(outcome.results_path).iloc[0]
    assert row["status"] == "failed" and row["reason"] == "diverged"
    assert row["attempts"] == 2  # retried per retries.trial_failures
    assert "diverged" in row["error"]
    assert not list((storage / "results" / "cells").glob("*.parquet"))

    code = main(["analyze", str(outcome.results_path), "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"cell {row['cell_id'][:12]} (textbook" in err and "diverged" in err


def _descendants(pid: int) -> set[tuple[int, str]]:
    """Live descendants of ``pid`` as (pid, start time) pairs, read from /proc."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        child = int(stat.parent.name)
        parents.setdefault(int(fields[1]), []).append(child)
        starts[child] = fields[19]
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add((child, starts[child]))
            todo.append(child)
    return found


def _alive(processes: set[tuple[int, str]]) -> set[tuple[int, str]]:
    out = set()
    for pid, start in processes:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[19] == start and stat[0] != "Z":
            out.add((pid, start))
    return out


def _interrupt_when(tools, args, env, log_path, ready, send):
    """Start the CLI sweep, call ``send(process)`` once ``ready(log text)``; returns (exit
    code, log text, the Ray processes it had started)."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            tools.cli(*args),
            env=env,
            cwd=tools.repo,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    seen: set[tuple[int, str]] = set()
    deadline = time.time() + 1200
    try:
        while not ready(log_path.read_text()):
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "the sweep never got there"
            seen |= _descendants(proc.pid)
            time.sleep(0.5)
        seen |= _descendants(proc.pid)
        send(proc)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return code, log_path.read_text(), seen


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
    code, text, ray_processes = _interrupt_when(
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
    time.sleep(5)
    assert not _alive(ray_processes), "Ray processes outlived the terminated sweep"
    # nothing written over the results: no (0-row) table, no provenance
    assert not (out / "results.parquet").exists() and not (out / "provenance.json").exists()

    # Ctrl-C (SIGINT to the whole foreground process group) after a cell finished
    code, text, ray_processes = _interrupt_when(
        tools,
        [*args, "--resume"],
        env,
        tmp_path / "sigint.log",
        lambda text: bool(_cell_files(storage)),
        lambda p: os.killpg(p.pid, signal.SIGINT),
    )
    assert code == 130, text[-3000:]
    assert "annealscale: interrupted (SIGINT)" in text and "Traceback" not in text
    time.sleep(5)
    assert not _alive(ray_processes), "Ray processes outlived the interrupted sweep"
    assert not (out / "results.parquet").exists()
    kept = _cell_files(storage)

    done = tools.run([*args, "--resume"], env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 2 and table["cell_id"].is_unique
    assert (table["status"] == "finished").all()
    final = _cell_files(storage)
    assert {k: final[k] for k in kept} == kept  # no finished cell rerun or rewritten
    assert json.loads((out / "provenance.json").read_text())["spec_hash"]


ONE_NODE_CLUSTER = """
import sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4})
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()  # until the test closes our stdin
cluster.shutdown()
"""


@pytest.mark.timeout(1500)
def test_two_sweeps_of_one_spec_at_once_train_each_cell_once(tmp_path, tools, resolve):
    storage = tmp_path / "storage"
    data = tools.spec(resolve, storage, seeds=(0, 1))  # 2 cells
    spec_path = tools.write(tmp_path / "spec.yaml", data)
    env = tools.env(tmp_path)
    # one Ray for both (two teams' sweeps on one cluster); each sweep is its own driver
    import sys

    cluster = subprocess.Popen(
        [sys.executable, "-c", ONE_NODE_CLUSTER],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
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
        cluster.stdin.close()
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            cluster.kill()
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


def _fill(directory: Path) -> Path:
    """Fill the file system holding ``directory`` to the last byte; the ballast file."""
    ballast = directory / "ballast"
    with ballast.open("wb", buffering=0) as f:  # unbuffered: closing never flushes into ENOSPC
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass
    return ballast


@pytest.mark.timeout(1500)
def test_a_full_disk_loses_no_finished_cell_and_a_rerun_completes(
    ray_local, tmp_path, tools, resolve
):
    mount = tmp_path / "mnt"
    mount.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"cannot mount a small tmpfs for the storage path here ({err})")
    try:
        storage = mount / "storage"
        one = run_sweep(parse_spec(tools.spec(resolve, storage)), tmp_path / "o1", resolve=resolve)
        assert one.finished == 1
        kept = _cell_files(storage)
        ballast = _fill(mount)
        spec = parse_spec(tools.spec(resolve, storage, seeds=(0, 1)))
        try:
            full = run_sweep(spec, tmp_path / "o2", resolve=resolve)
        except OSError as err:
            assert "No space left" in str(err) or err.errno == 28
        else:
            assert full.finished == 1 and full.failed == 1
        assert _cell_files(storage) == kept  # the finished cell is untouched
        assert not list((storage / "results" / "cells").glob(".*.tmp"))  # no torn file
        ballast.unlink()
        again = run_sweep(spec, tmp_path / "o2", resolve=resolve)
        assert (again.finished, again.failed, again.skipped) == (2, 0, 1)
        final = _cell_files(storage)
        assert {k: final[k] for k in kept} == kept
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _kill_group_when(proc, log_path: Path, ready, timeout: float = 1200) -> None:
    """SIGKILL ``proc``'s process group (the driver and its local Ray) once ``ready()``."""
    deadline = time.time() + timeout
    try:
        while not ready():
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "the fault point was never reached"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _start(tools, args, env, log_path: Path):
    with log_path.open("w") as log:
        return subprocess.Popen(
            tools.cli(*args),
            env=env,
            cwd=tools.repo,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.mark.timeout(1500)
def test_driver_killed_then_a_plain_rerun_finishes_without_rerunning(tmp_path, tools, resolve):
    storage, out = tmp_path / "storage", tmp_path / "out"
    spec_path = tools.write(tmp_path / "spec.yaml", tools.spec(resolve, storage, seeds=(0, 1)))
    env = tools.env(tmp_path)
    args = ["sweep", str(spec_path), "--out", str(out), "--no-analyze"]
    proc = _start(tools, args, env, tmp_path / "first.log")
    _kill_group_when(proc, tmp_path / "first.log", lambda: bool(_cell_files(storage)))
    time.sleep(1)
    before = _cell_files(storage)
    assert len(before) == 1
    # the killed driver's claim on the other cell is stale at once (its process is gone)
    rerun = tools.run(args, env, timeout=1500)  # plain: no --resume
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "being trained by another sweep" not in rerun.stdout + rerun.stderr
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 2 and table["cell_id"].is_unique
    assert (table["status"] == "finished").all()
    after = _cell_files(storage)
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
    proc = _start(tools, args, env, log)
    _kill_group_when(proc, log, lambda: "judging candidates" in log.read_text())
    assert not _cell_files(storage)
    rerun = tools.run(args, env, timeout=1500)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    table = pd.read_parquet(out / "results.parquet").sort_values("curation_spend")
    assert len(table) == 2 and (table["status"] == "finished").all()
    assert (table["attempts"] == 1).all()
    # the pools are whole: a larger spend buys a larger pool, each within its spend
    assert table["unique_tokens"].is_monotonic_increasing and (table["unique_tokens"] > 0).all()
    assert (table["curation_cost"] <= table["curation_spend"] * (1 + 1e-9)).all()


WORKER_NODE_CLUSTER = """
import sys
from ray.cluster_utils import Cluster

# The head holds only the trial drivers (custom resource 'head'); the anneal's Train
# worker needs a whole CPU, which only a worker node has.
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
node = cluster.add_node(num_cpus=2)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
for line in sys.stdin:
    if line.strip() == "remove":
        cluster.remove_node(node)  # the whole node: its raylet and every process on it
        node = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        print("removed", flush=True)
cluster.shutdown()
"""


@pytest.mark.timeout(1500)
def test_a_removed_worker_node_costs_a_restart_from_the_checkpoint_not_the_cell(
    tmp_path, tools, resolve
):
    import sys

    from tests.tune.test_recovery import _registered_checkpoints

    storage, out = tmp_path / "storage", tmp_path / "out"
    data = tools.spec(resolve, storage, tokens=(32768,))  # 32 steps
    data["checkpoint"] = {"every_steps": 4}
    data["resources"] = {"driver_resources": {"head": 0.001}}
    data["retries"] = {"worker_failures": 2, "trial_failures": 1}
    spec_path = tools.write(tmp_path / "spec.yaml", data)
    env = tools.env(tmp_path)
    cluster = subprocess.Popen(
        [sys.executable, "-c", WORKER_NODE_CLUSTER],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        address = cluster.stdout.readline().strip()
        assert address, "the cluster did not start"
        args = ["sweep", str(spec_path), "--out", str(out), "--no-analyze", "--address", address]
        proc = _start(tools, args, env, tmp_path / "sweep.log")
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
        cluster.stdin.close()
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            cluster.kill()
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 1
    row = table.iloc[0]
    assert row["status"] == "finished"
    assert row["start_step"] > 0 or row["resumed_from_step"] > 0  # not from the base model
    assert row["train_tokens"] == 32768


@pytest.mark.timeout(1500)
def test_a_truncated_checkpoint_is_set_aside_and_the_cell_restarts(tmp_path, tools, resolve):
    from tests.tune.test_recovery import _registered_checkpoints

    storage, out = tmp_path / "storage", tmp_path / "out"
    data = tools.spec(resolve, storage, tokens=(32768,))  # 32 steps
    data["checkpoint"] = {"every_steps": 4}
    spec_path = tools.write(tmp_path / "spec.yaml", data)
    env = tools.env(tmp_path)
    args = ["sweep", str(spec_path), "--out", str(out), "--no-analyze"]
    log = tmp_path / "first.log"
    proc = _start(tools, args, env, log)
    _kill_group_when(proc, log, lambda: bool(_registered_checkpoints(storage / "train")))
    runs = list((storage / "train").glob("cell-*"))
    assert len(runs) == 1
    # the newest checkpoint, the one a resume would load (the kill may land after several)
    newest = max(_registered_checkpoints(storage / "train"))
    largest = max((runs[0] / newest).rglob("*.pt"), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])

    rerun = tools.run(args, env, timeout=1500)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    row = pd.read_parquet(out / "results.parquet").iloc[0]
    assert row["status"] == "finished" and row["train_tokens"] == 32768
    assert row["start_step"] == 0 and row["resumed_from_step"] == 0  # not from the bad one
    assert len(list((storage / "train" / ".corrupt").iterdir())) == 1


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
