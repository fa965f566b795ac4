"""Cells and storage meet a fault, on a real local Ray, judged by the final results table
(nothing lost, no finished cell rerun, no cell trained twice): a cell that always fails; a
diverged cell; two specs sharing one storage path; a full disk on the storage path (a
small tmpfs; skipped where the machine cannot mount); a truncated checkpoint."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest

from annealscale.tune.spec import parse_spec
from annealscale.tune.sweep import run_sweep
from tests.e2e.faults import (
    cell_files,
    event_tags,
    fill,
    kill_group_when,
    start,
)

pytestmark = pytest.mark.slow


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
    before = cell_files(storage)
    again = run_sweep(spec, tmp_path / "out", resolve=resolve)
    assert (again.finished, again.failed, again.skipped, again.ran) == (1, 3, 1, 3)
    table = pd.read_parquet(again.results_path).set_index("cell_id")
    assert table.loc[blocked, "attempts"] == 4
    assert table.loc[cells[("tiny", 4096)].identity, "attempts"] == 2
    assert cell_files(storage) == before


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
    kept = cell_files(storage)
    table_a = pd.read_parquet(a.results_path)

    b = run_sweep(second, tmp_path / "out-second", resolve=resolve)
    assert (b.finished, b.skipped, b.ran) == (2, 1, 1)  # the shared cell is not rerun
    table_b = pd.read_parquet(b.results_path)
    assert set(table_a["cell_id"]) < set(table_b["cell_id"])
    after = cell_files(storage)
    assert {k: after[k] for k in kept} == kept
    tune_dirs = {p.name.rsplit("-", 1)[0]: p for p in (storage / "tune").iterdir()}
    assert not list(tune_dirs["first"].rglob("events.out.tfevents*"))
    events = list(tune_dirs["second"].rglob("events.out.tfevents*"))
    assert len(events) == 1
    assert "ray/tune/domain_bpb" in event_tags(events[0])

    # An unchanged spec, run again, runs no cell and rewrites nothing.
    again = run_sweep(first, tmp_path / "out-first", resolve=resolve)
    assert (again.ran, again.skipped) == (0, 1)
    pd.testing.assert_frame_equal(pd.read_parquet(again.results_path), table_a)
    assert cell_files(storage) == after


def test_a_diverged_cell_is_failed_retried_and_named_by_analyze(
    ray_local, tmp_path, tools, resolve, capsys
):
    from annealscale.cluster.cli import main

    storage = tmp_path / "storage"
    data = tools.spec(resolve, storage)  # 4 steps
    data["train"] = {**data["train"], "weight_decay": float("inf")}
    data["retries"] = {"trial_failures": 1, "worker_failures": 0}
    data["checkpoint"] = {"every_steps": 1}
    outcome = run_sweep(parse_spec(data), tmp_path / "out", resolve=resolve)
    assert (outcome.finished, outcome.failed) == (0, 1)
    row = pd.read_parquet(outcome.results_path).iloc[0]
    assert row["status"] == "failed" and row["reason"] == "diverged"
    assert row["attempts"] == 2  # retried per retries.trial_failures
    # the first update broke the weights: each attempt stopped at its first checkpoint,
    # and no checkpoint of the diverged model was stored for the retry to resume from
    assert "diverged: weights not finite after step 1" in row["error"]
    assert not list((storage / "train").rglob("_complete"))
    assert not list((storage / "results" / "cells").glob("*.parquet"))

    code = main(["analyze", str(outcome.results_path), "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"cell {row['cell_id'][:12]} (textbook" in err and "diverged" in err


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
        kept = cell_files(storage)
        ballast = fill(mount)
        spec = parse_spec(tools.spec(resolve, storage, seeds=(0, 1)))
        try:
            full = run_sweep(spec, tmp_path / "o2", resolve=resolve)
        except OSError as err:
            assert "No space left" in str(err) or err.errno == 28
        else:
            assert full.finished == 1 and full.failed == 1
        assert cell_files(storage) == kept  # the finished cell is untouched
        assert not list((storage / "results" / "cells").glob(".*.tmp"))  # no torn file
        ballast.unlink()
        again = run_sweep(spec, tmp_path / "o2", resolve=resolve)
        assert (again.finished, again.failed, again.skipped) == (2, 0, 1)
        final = cell_files(storage)
        assert {k: final[k] for k in kept} == kept
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


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
    proc = start(tools, args, env, log)
    kill_group_when(proc, log, lambda: bool(_registered_checkpoints(storage / "train")))
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
