"""The in-process reader of packed windows (a warm cell's datasets): the rows and order
Ray Data gives, a seeded local shuffle, and a clear error for a damaged directory."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annealscale.anneal.windows import PackedWindows
from annealscale.core.errors import AnnealscaleError

WIDTH = 9


def _write(directory, *, tensor: bool, sizes=(10, 10, 10)):
    """Shards whose windows number 0..n-1 (every token of a window is its index), written
    out of name order: the reader must order files by name, not by mtime."""
    from ray.data.extensions import ArrowTensorArray

    directory.mkdir()
    starts = np.cumsum([0, *sizes])
    for shard in reversed(range(len(sizes))):
        ids = np.arange(starts[shard], starts[shard + 1])
        rows = np.repeat(ids[:, None], WIDTH, axis=1).astype(np.int32)
        column = ArrowTensorArray.from_numpy(rows) if tensor else pa.array(rows.tolist())
        pq.write_table(
            pa.table({"tokens": column}), directory / f"part-{shard:03d}.parquet", row_group_size=4
        )
    return directory


def _ids(dataset, **kwargs) -> np.ndarray:
    batches = list(dataset.iter_batches(batch_size=4, **kwargs))
    rows = np.concatenate([b["tokens"] for b in batches])
    assert rows.shape[1] == WIDTH
    assert (rows == rows[:, :1]).all()  # windows stay whole
    return rows[:, 0]


@pytest.mark.parametrize("tensor", [True, False], ids=["tensor_column", "list_column"])
@pytest.mark.parametrize("rows", [None, 25, 7, 100])
def test_rows_in_file_order_and_the_first_rows_when_limited(tmp_path, tensor, rows):
    dataset = PackedWindows(_write(tmp_path / "packed", tensor=tensor), rows=rows)
    wanted = 30 if rows is None else min(rows, 30)
    assert _ids(dataset).tolist() == list(range(wanted))


def test_ray_data_reads_the_same_rows(ray_local, tmp_path):
    from annealscale.tune.cell_data import packed_dataset

    directory = _write(tmp_path / "packed", tensor=True)
    for rows in (None, 13):
        ray_rows = np.stack([r["tokens"] for r in packed_dataset(str(directory), rows).take_all()])
        ours = np.concatenate(
            [b["tokens"] for b in PackedWindows(directory, rows).iter_batches(batch_size=5)]
        )
        np.testing.assert_array_equal(ours, ray_rows)


def test_local_shuffle_is_seeded_whole_and_local(tmp_path):
    dataset = PackedWindows(_write(tmp_path / "packed", tensor=True, sizes=(40, 40, 40)))
    first = _ids(dataset, local_shuffle_buffer_size=16, local_shuffle_seed=3)
    assert sorted(first.tolist()) == list(range(120))  # every row once
    assert first.tolist() != list(range(120))
    assert np.array_equal(first, _ids(dataset, local_shuffle_buffer_size=16, local_shuffle_seed=3))
    assert not np.array_equal(
        first, _ids(dataset, local_shuffle_buffer_size=16, local_shuffle_seed=4)
    )
    # a local shuffle, not a global one: the first batch is drawn from the first file read
    assert first[:4].max() < 40


def test_batches_have_the_asked_size_but_the_last(tmp_path):
    dataset = PackedWindows(_write(tmp_path / "packed", tensor=False), rows=30)
    for kwargs in ({}, {"local_shuffle_buffer_size": 8, "local_shuffle_seed": 0}):
        sizes = [len(b["tokens"]) for b in dataset.iter_batches(batch_size=7, **kwargs)]
        assert sizes == [7, 7, 7, 7, 2]


def test_an_empty_or_ragged_directory_is_a_clear_error(tmp_path):
    with pytest.raises(AnnealscaleError, match="holds no packed windows"):
        PackedWindows(tmp_path)
    ragged = tmp_path / "ragged"
    ragged.mkdir()
    pq.write_table(pa.table({"tokens": [[1, 2, 3], [4, 5]]}), ragged / "part-0.parquet")
    with pytest.raises(AnnealscaleError, match="part-0.parquet: packed windows of unequal"):
        list(PackedWindows(ragged).iter_batches(batch_size=2))
