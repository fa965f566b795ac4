"""The results store: finished rows written once and never replaced, failures replaced and
counted on, consolidation limited to one spec's cells, local paths and file:// URIs alike."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from annealscale.tune.results import ResultsStore


def _row(identity: str, status: str = "finished", **extra) -> dict:
    return {
        "cell_id": identity,
        "source": "textbook",
        "curation_spend": 0.1,
        "train_tokens": 4096,
        "seed": 0,
        "unique_tokens": 1000,
        "curation_cost": 0.05,
        "train_flops": 1e15,
        "eval_flops": 1e14,
        "train_cost": 0.0,
        "total_cost": 0.0,
        "domain_bpb": 1.5 if status == "finished" else math.nan,
        "general_bpb": 2.0 if status == "finished" else math.nan,
        "status": status,
        "error": None if status == "finished" else "boom",
        "attempts": 1,
        **extra,
    }


@pytest.fixture(params=["path", "file-uri"])
def store(request, tmp_path):
    root = tmp_path / "results"
    return ResultsStore(root if request.param == "path" else f"file://{root}")


def test_a_finished_row_is_written_once_and_never_replaced(store, tmp_path):
    path = store.write_row(_row("a"))
    first = open(path, "rb").read()
    store.write_row(_row("a", domain_bpb=9.9))
    assert open(path, "rb").read() == first
    assert store.finished_ids() == {"a"}
    assert store.read()["domain_bpb"].tolist() == [1.5]
    assert not [p for p in (tmp_path / "results" / "cells").iterdir() if p.name.startswith(".")]


def test_failures_are_replaced_counted_and_hidden_once_the_cell_finishes(store):
    store.write_row(_row("a", "failed", attempts=1))
    store.write_row(_row("a", "failed", attempts=3, error="last"))
    store.write_row(_row("b", "failed", attempts=2))
    assert store.finished_ids() == set()
    assert store.failed_attempts({"a", "b", "c"}) == {"a": 3, "b": 2}
    table = store.read().set_index("cell_id")
    assert table.loc["a", "error"] == "last" and table.loc["a", "status"] == "failed"

    store.write_row(_row("a"))
    assert store.failed_attempts({"a", "b"}) == {"b": 2}
    table = store.read().set_index("cell_id")
    assert table.loc["a", "status"] == "finished" and len(table) == 2


def test_consolidate_keeps_only_this_specs_cells_and_reprices_compute(store, tmp_path):
    store.write_row(_row("mine"))
    store.write_row(_row("theirs"))
    path, table = store.consolidate({"mine"}, out_dir=tmp_path / "out", usd_per_pflop=100.0)
    assert table["cell_id"].tolist() == ["mine"]
    assert table["train_cost"].iloc[0] == pytest.approx(110.0)  # 1.1 PFLOP at 100 USD
    assert table["total_cost"].iloc[0] == pytest.approx(110.05)
    assert pd.read_parquet(path)["cell_id"].tolist() == ["mine"]
    assert store.finished_ids() == {"mine", "theirs"}


def test_rows_of_cells_failed_before_training_consolidate(store, tmp_path):
    store.write_row(
        {
            "cell_id": "x",
            "source": "tiny",
            "curation_spend": 0.1,
            "train_tokens": 4096,
            "seed": 0,
            "status": "failed",
            "error": "packing produced no windows",
            "attempts": 1,
        }
    )
    _, table = store.consolidate({"x"}, out_dir=tmp_path / "out", usd_per_pflop=1.0)
    assert table["status"].tolist() == ["failed"] and math.isnan(table["train_cost"].iloc[0])


def test_reads_through_the_snapshot_match_the_cell_files(store, tmp_path):
    from annealscale.tune.results import SNAPSHOT_MIN_NEW

    first = [f"a{i:03d}" for i in range(SNAPSHOT_MIN_NEW + 6)]
    for i, identity in enumerate(first):
        # rows differ in columns: a task metric on some, none on others
        store.write_row(_row(identity, **({"task_acc": 0.5} if i % 2 else {})))
    store.write_row(_row("f", status="failed"))
    table = store.read()
    assert set(table["cell_id"]) == {*first, "f"}
    snapshot = tmp_path / "results" / "snapshot" / "cells.parquet"
    assert snapshot.exists()  # the read kept the finished rows in one file

    later = ["b0", "b1"]
    for identity in later:
        store.write_row(_row(identity))
    again = store.read()
    assert set(again["cell_id"]) == {*first, *later, "f"} and again["cell_id"].is_unique
    # the same rows and values as reading every cell file alone
    alone = pd.concat(
        [pd.read_parquet(p) for p in (tmp_path / "results" / "cells").glob("*.parquet")]
    ).set_index("cell_id")
    got = again.set_index("cell_id").loc[alone.index]
    assert got["task_acc"].isna().sum() == alone["task_acc"].isna().sum()
    pd.testing.assert_series_equal(got["domain_bpb"], alone["domain_bpb"])
    assert store.has_finished("b1") and not store.has_finished("f")
    # a subset reads only its own rows, from the snapshot as from the files
    assert set(store.read({"a000", "b0", "f"})["cell_id"]) == {"a000", "b0", "f"}
