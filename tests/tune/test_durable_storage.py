"""Storage under faults, without Ray: durable exclusive row files, corrupt files moved aside,
per-cell claims with heartbeats and stale takeover, ``--out`` tied to its spec, capacity
refusals, signals turned into `SweepInterrupted`."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from types import SimpleNamespace

import pandas as pd
import pytest

from annealscale.core.errors import AnnealscaleError
from annealscale.tune.capacity import unschedulable
from annealscale.tune.claims import Claims, new_owner
from annealscale.tune.interrupts import Interrupts, SweepInterrupted
from annealscale.tune.results import ResultsStore
from annealscale.tune.sweep import _check_out_dir
from tests.helpers import exited_pid
from tests.tune.test_results import _row


def test_a_second_finished_row_never_replaces_the_first(tmp_path):
    one, two = ResultsStore(tmp_path), ResultsStore(tmp_path)  # two sweeps, one storage
    path = one.write_row(_row("a"))
    two.write_row(_row("a", domain_bpb=9.9))
    assert pd.read_parquet(path)["domain_bpb"].tolist() == [1.5]
    assert not [p for p in (tmp_path / "cells").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("bad", [b"", b"PAR1 torn", b"not parquet at all"])
def test_a_corrupt_row_file_is_moved_aside_and_its_cell_runs_again(tmp_path, bad, caplog):
    store = ResultsStore(tmp_path)
    store.write_row(_row("good"))
    store.write_row(_row("f", "failed"))
    (tmp_path / "cells" / "broken.parquet").write_bytes(bad)
    (tmp_path / "failed" / "broken2.parquet").write_bytes(bad)
    assert store.quarantine_corrupt() == ["broken", "broken2"]
    assert store.finished_ids() == {"good"}
    assert set(store.read()["cell_id"]) == {"good", "f"}
    aside = list((tmp_path / "cells" / ".corrupt").iterdir())
    assert len(aside) == 1 and aside[0].read_bytes() == bad
    assert "moved to" in caplog.text and "broken" in caplog.text
    assert store.quarantine_corrupt() == []


def test_a_claim_is_exclusive_until_released(tmp_path):
    a = Claims(str(tmp_path), new_owner(), stale_seconds=60)
    b = Claims(str(tmp_path), new_owner(), stale_seconds=60)
    assert a.acquire("c1")
    assert a.acquire("c1")  # a retry of a's own trial
    assert not b.acquire("c1")
    record = json.loads(a.path("c1").read_text())
    assert record["owner"] == a.owner["owner"] and record["pid"] == os.getpid()
    b.release("c1")  # not b's: kept
    assert a.path("c1").exists()
    a.release("c1")
    assert b.acquire("c1")


def test_a_stale_claim_is_taken_over_and_a_heartbeat_keeps_one_fresh(tmp_path):
    a = Claims(str(tmp_path), new_owner(), stale_seconds=1.0)
    b = Claims(str(tmp_path), new_owner(), stale_seconds=1.0)
    assert a.acquire("c1")
    with a.heartbeat("c1"):
        time.sleep(2.0)
        assert not b.acquire("c1")  # heartbeat kept it fresh
    time.sleep(1.5)
    assert b.acquire("c1")
    assert json.loads(b.path("c1").read_text())["owner"] == b.owner["owner"]


def test_a_claim_of_a_dead_driver_on_this_host_is_stale_at_once(tmp_path):
    gone = {**new_owner(), "pid": exited_pid()}
    assert Claims(str(tmp_path), gone, stale_seconds=600).acquire("c1")
    assert Claims(str(tmp_path), new_owner(), stale_seconds=600).acquire("c1")


def test_out_dir_refuses_another_spec_unless_forced(tmp_path):
    (tmp_path / "provenance.json").write_text(json.dumps({"spec_hash": "a" * 64}))
    _check_out_dir(tmp_path, "a" * 64, force=False)
    with pytest.raises(AnnealscaleError, match="--out .*another spec.*--force"):
        _check_out_dir(tmp_path, "b" * 64, force=False)
    _check_out_dir(tmp_path, "b" * 64, force=True)
    _check_out_dir(tmp_path / "new", "b" * 64, force=False)


def _resources(**kw):
    base = dict(num_workers=1, cpus_per_worker=1, gpus_per_worker=0, driver_resources={})
    return SimpleNamespace(**{**base, **kw})


def test_a_cell_larger_than_every_node_is_refused_with_asks_and_offers():
    nodes = [{"CPU": 4.0, "memory": 1e9}, {"CPU": 2.0, "GPU": 1.0}]
    why = unschedulable(_resources(cpus_per_worker=64), 0.25, nodes)
    assert "1 worker(s) x {CPU: 64}" in why and "largest of 2 node(s) has {CPU: 4}" in why
    assert "\n" not in why
    assert unschedulable(_resources(cpus_per_worker=4), 0.25, nodes) is None
    why = unschedulable(_resources(gpus_per_worker=2), 0.25, nodes)
    assert "GPU: 2" in why
    why = unschedulable(_resources(driver_resources={"spot": 1.0}), 0.25, nodes)
    assert "driver" in why and "spot: 1" in why
    why = unschedulable(_resources(num_workers=8, cpus_per_worker=1), 0.25, nodes)
    assert "only 6 of the 8 workers" in why


def test_an_autoscaling_cluster_is_judged_by_its_node_types():
    head = [{"CPU": 2.0}]
    types = {"head": {"CPU": 2.0}, "gpu": {"CPU": 8.0, "GPU": 1.0}}
    assert (
        unschedulable(
            _resources(cpus_per_worker=8, gpus_per_worker=1, num_workers=16), 0.25, head, types
        )
        is None
    )
    why = unschedulable(_resources(cpus_per_worker=64), 0.25, head, types)
    assert "node types offer head {CPU: 2}, gpu {CPU: 8}" in why


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_outside_tune_raises_sweep_interrupted_with_its_exit_code(sig):
    before = signal.getsignal(sig)
    with pytest.raises(SweepInterrupted) as caught, Interrupts():
        os.kill(os.getpid(), sig)
        time.sleep(1)
    assert caught.value.exit_code == 128 + sig
    assert signal.getsignal(sig) == before


def test_analysis_names_failed_and_diverged_cells():
    from annealscale.analysis.errors import AnalysisError
    from annealscale.analysis.table import load_results

    rows = [
        {**_row("ok1"), "reason": None},
        {**_row("bad", "failed", error="cell bad diverged: train_loss=nan"), "reason": "diverged"},
    ]
    table = load_results(pd.DataFrame(rows))
    assert any("cell bad" in n and "diverged" in n for n in table.notes)
    with pytest.raises(AnalysisError, match="no finished cells: cell bad .* diverged"):
        load_results(pd.DataFrame(rows[1:]))
    assert math.isnan(rows[1]["domain_bpb"])


def test_a_train_run_with_a_truncated_checkpoint_is_set_aside(tmp_path):
    import torch

    from annealscale.tune.train_runs import damage, set_aside_if_damaged

    run = tmp_path / "train" / "cell-x"
    checkpoint = run / "step-00000004"
    (checkpoint / "state").mkdir(parents=True)
    torch.save({"w": torch.arange(10000.0)}, checkpoint / "state" / "model.pt")
    (checkpoint / "worker-0.json").write_text(json.dumps({"step": 4}))
    (run / "checkpoint_manager_snapshot.json").write_text(
        json.dumps({"checkpoint_results": [{"checkpoint_dir_name": checkpoint.name}]})
    )
    assert damage(checkpoint) is None
    assert set_aside_if_damaged(str(tmp_path / "train"), "cell-x") is None
    model = checkpoint / "state" / "model.pt"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    assert "model.pt is damaged" in damage(checkpoint)
    assert set_aside_if_damaged(str(tmp_path / "train"), "cell-x")
    assert not run.exists()
    assert len(list((tmp_path / "train" / ".corrupt").iterdir())) == 1
