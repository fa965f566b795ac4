"""A packed Parquet directory read in this process, for an anneal that runs in one process.

A warm single-worker cell (`annealscale.tune.warm`) has no Ray Train run to hand it
dataset shards. Reading its pool through Ray Data anyway cost a Ray Data job per dataset
(a put of the whole pool into the object store, a metadata task, the streaming executor
and its cluster-wide coordinator and stats actors: a process start each on a fresh
cluster). `PackedWindows` reads the files directly with pyarrow, one record batch at a
time, and offers the one method the anneal uses of a Ray Data shard, ``iter_batches``.

Row order is the one Ray Data gives with ``preserve_order``: files by name, rows in file
order, the first ``rows`` when limited. The local shuffle is seeded, so a stream restarted
with the same seed yields the same batches (what a resumed anneal relies on).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from annealscale.core.errors import AnnealscaleError

READ_ROWS = 1024
"""Rows per record batch read from a file."""


class PackedWindows:
    """The windows of a packed directory (its first ``rows``, if set), read in-process."""

    def __init__(self, directory: str | Path, rows: int | None = None):
        self.directory = Path(directory)
        self.files = sorted(self.directory.glob("*.parquet"))
        if not self.files:
            raise AnnealscaleError(f"{directory}: holds no packed windows; delete it to re-pack")
        self.rows = rows

    def iter_batches(
        self,
        *,
        batch_size: int,
        batch_format: str = "numpy",
        prefetch_batches: int = 0,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Batches ``{"tokens": (n, width) int array}`` of ``batch_size`` rows (the last
        may be smaller), as Ray Data's ``iter_batches`` with a local shuffle buffer:
        each batch is drawn at random from a buffer kept above
        ``local_shuffle_buffer_size`` rows while rows remain to be read.

        ``prefetch_batches`` is accepted for the interface and ignored: a read here is
        a local file read, not a remote fetch."""
        if batch_format != "numpy":
            raise ValueError(f"batch_format {batch_format!r}: only 'numpy' is supported")
        blocks = self._blocks()
        if not local_shuffle_buffer_size:
            yield from _rebatch(blocks, batch_size)
            return
        rng = np.random.default_rng(local_shuffle_seed)
        buffer = None
        for block in blocks:
            buffer = block if buffer is None else np.concatenate([buffer, block])
            while len(buffer) >= local_shuffle_buffer_size + batch_size:
                picked = rng.choice(len(buffer), size=batch_size, replace=False)
                yield {"tokens": buffer[picked]}
                buffer = np.delete(buffer, picked, axis=0)
        if buffer is not None and len(buffer):
            rest = buffer[rng.permutation(len(buffer))]
            for start in range(0, len(rest), batch_size):
                yield {"tokens": rest[start : start + batch_size]}

    def _blocks(self) -> Iterator[np.ndarray]:
        import pyarrow.parquet as pq

        left = self.rows
        for file in self.files:
            for batch in pq.ParquetFile(file).iter_batches(
                batch_size=READ_ROWS, columns=["tokens"]
            ):
                if left is not None and left <= 0:
                    return
                block = token_rows(batch.column(0), where=file)
                if left is not None:
                    block = block[:left]
                    left -= len(block)
                if len(block):
                    yield block


def token_rows(column, *, where: Path | str) -> np.ndarray:
    """A ``tokens`` column of equal-length windows (a list, fixed-size list or Ray tensor
    column) as an ``(n, width)`` array, without a Python object per row."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column, pa.ExtensionArray):
        column = column.storage
    if len(column) == 0:
        return np.empty((0, 0), dtype=np.int32)
    if not pa.types.is_fixed_size_list(column.type):
        lengths = column.value_lengths().to_numpy(zero_copy_only=False)
        if lengths.min() != lengths.max():
            raise AnnealscaleError(
                f"{where}: packed windows of unequal length; delete it to re-pack"
            )
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), -1)


def _rebatch(blocks: Iterator[np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    pending: list[np.ndarray] = []
    have = 0
    for block in blocks:
        pending.append(block)
        have += len(block)
        while have >= size:
            rows = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield {"tokens": rows[:size]}
            pending, have = [rows[size:]], have - size
    if have:
        yield {"tokens": np.concatenate(pending)}
