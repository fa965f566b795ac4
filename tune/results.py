"""The results store: one Parquet file per cell under the storage path, consolidated on read.

A finished cell's row is written once, atomically, to ``cells/<identity>.parquet`` and
never replaced, so its bytes survive every later sweep, restart or resume; a cell whose
identity has that file is never run again, by this sweep or any other sharing the storage
path. A failure goes to ``failed/<identity>.parquet`` with the error and the attempts so
far (replaced by the next failure, ignored once the cell finishes), so errored cells are
retried and their attempts keep counting.

Reading scales to 100,000 cells: finished rows never change, so a read keeps them in a
snapshot (``snapshot/cells.parquet``, rewritten atomically by any reader) and opens only
the cell files written since, several at a time, building one Arrow table and one
DataFrame; a trial checks its own cell with one stat, not a listing (`has_finished`).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from annealscale.core.units import flops_to_usd
from annealscale.tune.storage import filesystem

log = logging.getLogger(__name__)

READ_THREADS = 4
"""Cell files opened at once when reading (each is a small file: latency, not bandwidth)."""
SNAPSHOT_MIN_NEW = 64
"""New finished rows that make a read rewrite the snapshot (fewer: read them directly)."""

REQUIRED_COLUMNS = (
    "source",
    "curation_spend",
    "unique_tokens",
    "train_tokens",
    "seed",
    "status",
    "domain_bpb",
    "general_bpb",
    "curation_cost",
    "train_flops",
    "total_cost",
)


class ResultsStore:
    """Rows under ``root`` (a local directory or a URI): ``cells/`` and ``failed/``."""

    def __init__(self, root: str | Path):
        self.root = str(root)
        self.fs, self._base = filesystem(self.root)
        self._local = isinstance(self.fs, pafs.LocalFileSystem)

    def _path(self, kind: str, identity: str) -> str:
        return f"{self._base}/{kind}/{identity}.parquet"

    def write_row(self, row: dict) -> str:
        """Store ``row`` (``status`` finished or failed); returns the file written."""
        row = {**row, "written_at": time.time()}
        if row["status"] == "finished":
            path = self._path("cells", row["cell_id"])
            if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
                log.warning("%s: already finished; its stored row is kept", row["cell_id"])
                return path
        else:
            path = self._path("failed", row["cell_id"])
        self._write_atomically(pa.Table.from_pylist([row]), path)
        return path

    def _write_atomically(self, table: pa.Table, path: str) -> None:
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if not self._local:
            # An object store's PUT is atomic: readers see the old object or the new one.
            pq.write_table(table, path, filesystem=self.fs)
            return
        tmp = f"{parent}/.{path.rsplit('/', 1)[1]}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        pq.write_table(table, tmp, filesystem=self.fs)
        self.fs.move(tmp, path)

    def _replace(self, table: pa.Table, path: str) -> None:
        """Write ``table`` to ``path``, replacing it whole (readers see old or new)."""
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{uuid.uuid4().hex}.tmp"
        pq.write_table(table, tmp if self._local else path, filesystem=self.fs)
        if self._local:
            self.fs.move(tmp, path)

    def _identities(self, kind: str) -> set[str]:
        selector = pafs.FileSelector(f"{self._base}/{kind}", allow_not_found=True)
        return {
            info.base_name[: -len(".parquet")]
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
            and info.base_name.endswith(".parquet")
            and not info.base_name.startswith(".")
        }

    def finished_ids(self) -> set[str]:
        return self._identities("cells")

    def has_finished(self, identity: str) -> bool:
        """Whether ``identity`` has a finished row (one stat, for a trial about to run)."""
        return self.fs.get_file_info(self._path("cells", identity)).type == pafs.FileType.File

    def failed_attempts(self, identities: set[str]) -> dict[str, int]:
        """Attempts recorded by the latest failure of each unfinished cell in ``identities``."""
        failed = (self._identities("failed") & set(identities)) - self.finished_ids()
        table = self._read("failed", failed)
        if table.empty:
            return {}
        return dict(zip(table["cell_id"], table["attempts"].astype(int), strict=True))

    def _read(self, kind: str, identities: set[str]) -> pd.DataFrame:
        table = self._read_arrow(kind, identities)
        return table.to_pandas() if table is not None else pd.DataFrame()

    def _read_arrow(self, kind: str, identities: set[str]) -> pa.Table | None:
        """The rows of ``identities`` (one file each), opened several at a time."""
        from concurrent.futures import ThreadPoolExecutor

        paths = [self._path(kind, i) for i in sorted(identities)]
        if not paths:
            return None
        with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
            tables = list(pool.map(self._read_file, paths))
        return _concat(tables)

    def _read_file(self, path: str) -> pa.Table:
        # ParquetFile skips the dataset machinery of pq.read_table: 2.5x faster on the
        # one-row files of this store
        with self.fs.open_input_file(path) as handle:
            return pq.ParquetFile(handle).read()

    def _finished(self, identities: set[str]) -> pd.DataFrame:
        """Finished rows of ``identities``: the snapshot's, plus files written since (the
        snapshot is then rewritten to hold them too)."""
        snapshot_path = f"{self._base}/snapshot/cells.parquet"
        snapshot = None
        if self.fs.get_file_info(snapshot_path).type == pafs.FileType.File:
            try:
                snapshot = pq.read_table(snapshot_path, filesystem=self.fs)
            except (OSError, pa.ArrowInvalid):  # torn by a crash on a non-atomic store
                snapshot = None
        known = set(snapshot.column("cell_id").to_pylist()) if snapshot is not None else set()
        new = self._read_arrow("cells", identities - known)
        if new is not None and len(new) >= SNAPSHOT_MIN_NEW:
            merged = new if snapshot is None else _concat([snapshot, new])
            try:
                self._replace(merged, snapshot_path)
                snapshot, new = merged, None
            except OSError as err:  # a read-only store still reads, only slower
                log.warning("results snapshot not written (%s)", err)
        parts = [t for t in (snapshot, new) if t is not None]
        if not parts:
            return pd.DataFrame()
        table = _concat(parts)
        if snapshot is not None:
            mask = pc.is_in(table.column("cell_id"), pa.array(sorted(identities)))
            table = table.filter(mask)
        return table.to_pandas()

    def read(self, identities: set[str] | None = None) -> pd.DataFrame:
        """Finished rows, plus the latest failure of every cell not finished."""
        finished = self.finished_ids()
        failed = self._identities("failed") - finished
        if identities is not None:
            finished &= set(identities)
            failed &= set(identities)
        frames = [self._finished(finished), self._read("failed", failed)]
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def consolidate(
        self, identities: set[str], *, out_dir: str | Path, usd_per_pflop: float
    ) -> tuple[Path, pd.DataFrame]:
        """Write ``out_dir/results.parquet`` with the rows of ``identities`` (this spec's
        cells), sorted for reading, with compute costs priced at ``usd_per_pflop``.

        Rows of other specs sharing the storage path stay where they are and are left out;
        prices are not part of a cell's identity, so costs are recomputed here from the
        stored FLOPs.
        """
        table = self.read(identities)
        if not table.empty:
            # rows of cells that failed before training have no compute columns
            table = table.reindex(
                columns=list(dict.fromkeys([*table.columns, *REQUIRED_COLUMNS, "eval_flops"]))
            )
            compute = table["train_flops"] + table["eval_flops"]
            table = table.assign(
                train_cost=flops_to_usd(compute, usd_per_pflop),
                total_cost=table["curation_cost"] + flops_to_usd(compute, usd_per_pflop),
            )
            table = table.sort_values(["source", "curation_spend", "train_tokens", "seed"])
        path = Path(out_dir) / "results.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".results.parquet.{os.getpid()}.tmp")
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path, table


def _concat(tables: list[pa.Table]) -> pa.Table:
    """One table from rows whose columns differ (task metrics, rows failed before training):
    missing columns become null, null-typed ones take the other rows' type."""
    return pa.concat_tables(tables, promote_options="permissive")
