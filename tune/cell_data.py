"""The datasets a cell's anneal reads: its curated pool and its replay windows.

Both are packed Parquet directories. A warm single-worker cell reads them in its own
process (`anneal.windows.PackedWindows`): it has no Train run to shard them, and a Ray
Data job per dataset would only add its fixed costs. A Train run gets Ray Data datasets.
A Ray Data read job has a fixed cost of seconds (read and metadata tasks, the streaming
executor) whatever the size: at the demo's scale two of them cost a third of a cell's wall
time (``benchmarks/sweep_overhead.py``). Sets up to `IN_MEMORY_BYTES` are therefore read
here with pyarrow and handed to Train as in-memory Ray Data datasets
(`ray.data.from_arrow`); larger ones are read by Ray Data's parallel Parquet reader. Either
way the workers stream them through ``ray.train.get_dataset_shard``, in the same row order:
files by name, rows in file order.
"""

from __future__ import annotations

from pathlib import Path

from annealscale.core.errors import AnnealscaleError

IN_MEMORY_BYTES = 256 * 2**20
"""Largest (uncompressed) read that goes through the driver's memory instead of a Ray Data
read job."""


def cell_datasets(
    domain_dir: str, replay_dir: str, replay_rows: int, *, in_process: bool = False
) -> dict:
    """``{"domain": the whole pool, "replay": its first replay_rows windows}``: read in
    this process when ``in_process``, else as Ray Data datasets for a Train run."""
    if in_process:
        from annealscale.anneal.windows import PackedWindows

        return {
            "domain": PackedWindows(domain_dir),
            "replay": PackedWindows(replay_dir, rows=replay_rows),
        }
    return {
        "domain": packed_dataset(domain_dir),
        "replay": packed_dataset(replay_dir, rows=replay_rows),
    }


def packed_dataset(directory: str, rows: int | None = None, max_bytes: int = IN_MEMORY_BYTES):
    """The windows of a packed directory as a Ray Data dataset (the first ``rows``, if set)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray.data

    files = sorted(Path(directory).glob("*.parquet"))
    if not files:
        raise AnnealscaleError(f"{directory}: holds no packed windows; delete it to re-pack")
    metadata = [pq.ParquetFile(f).metadata for f in files]
    total_rows = sum(m.num_rows for m in metadata)
    total_bytes = sum(
        m.row_group(i).total_byte_size for m in metadata for i in range(m.num_row_groups)
    )
    wanted = total_rows if rows is None else min(rows, total_rows)
    if total_bytes * wanted <= max_bytes * max(total_rows, 1):
        tables, have = [], 0
        for file in files:
            if have >= wanted:
                break
            tables.append(pq.read_table(file))
            have += tables[-1].num_rows
        table = pa.concat_tables(tables).slice(0, wanted)
        return ray.data.from_arrow(table)
    # file and row order must not depend on which read task finishes first
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    dataset = ray.data.read_parquet([str(f) for f in files])
    if rows is not None:
        dataset = dataset.limit(rows)
    return dataset.materialize()
