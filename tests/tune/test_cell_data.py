"""A cell's datasets: the in-memory path and Ray Data's reader give the same rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annealscale.core.errors import AnnealscaleError
from annealscale.tune.cell_data import packed_dataset


def _rows(dataset) -> np.ndarray:
    return np.stack([np.asarray(r["tokens"]) for r in dataset.take_all()])


@pytest.fixture
def packed(tmp_path):
    """Three packed shards whose windows number 0..29 (first token = window index)."""
    directory = tmp_path / "packed"
    directory.mkdir()
    # written out of name order: the reader must order files by name, not by mtime
    for shard in (2, 0, 1):
        windows = [[10 * shard + i] + [7] * 8 for i in range(10)]
        table = pa.table({"tokens": pa.array(windows, type=pa.list_(pa.int32()))})
        pq.write_table(table, directory / f"part-{shard:03d}.parquet")
    return directory


@pytest.mark.parametrize("rows", [None, 25, 7, 100])
def test_in_memory_and_ray_data_reads_agree(ray_local, packed, rows):
    in_memory = _rows(packed_dataset(str(packed), rows=rows))
    streamed = _rows(packed_dataset(str(packed), rows=rows, max_bytes=0))
    wanted = 30 if rows is None else min(rows, 30)
    assert in_memory.shape == (wanted, 9)
    assert in_memory[:, 0].tolist() == list(range(wanted))  # files by name, rows in order
    np.testing.assert_array_equal(in_memory, streamed)


def test_empty_packed_directory_is_a_clear_error(ray_local, tmp_path):
    with pytest.raises(AnnealscaleError, match="holds no packed windows"):
        packed_dataset(str(tmp_path))
