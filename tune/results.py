"""The results store: one Parquet file per cell under the storage path, consolidated on read.

A finished cell's row is written once, durably (fsynced before it is named) and
exclusively, to ``cells/<identity>.parquet`` and never replaced, so its bytes survive every later sweep, restart or resume; a cell whose
identity has that file is never run again, by this sweep or any other sharing the storage
path. A failure goes to ``failed/<identity>.parquet`` with the error and the attempts so
far (replaced by the next failure, ignored once the cell finishes), so errored cells are
retried and their attempts keep counting. A row file that cannot be read (a zero-byte
file after a crash) is moved aside to ``<kind>/.corrupt/`` by `quarantine_corrupt`, and its
cell reruns.

Reading scales to 100,000 cells: finished rows never change, so a read keeps them in a
snapshot (``snapshot/cells.parquet``, rewritten atomically by any reader) and opens only
the cell files written since, several at a time, building one Arrow table and one
DataFrame; a trial checks its own cell with one stat, not a listing (`has_finished`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from annealscale.core import durable
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
        """Store ``row`` (``status`` finished or failed); returns the file written.

        A finished row is created exclusively: if another sweep sharing the storage wrote
        the cell first, its row is kept and this one dropped (with a warning)."""
        row = {**row, "written_at": time.time()}
        if row["status"] == "finished":
            path = self._path("cells", row["cell_id"])
            if not self._write(pa.Table.from_pylist([row]), path, exclusive=True):
                log.warning("%s: already finished; its stored row is kept", row["cell_id"])
        else:
            path = self._path("failed", row["cell_id"])
            self._write(pa.Table.from_pylist([row]), path, exclusive=False)
        return path

    def _write(self, table: pa.Table, path: str, *, exclusive: bool) -> bool:
        """Write ``table`` at ``path``; False if ``exclusive`` and the file existed.

        Locally: to a temporary file, fsynced, then linked (exclusive) or renamed into
        place and the directory fsynced (`core.durable`), so a crash or power loss leaves
        the whole file or none."""
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if not self._local:
            # An object store's PUT is atomic: readers see the old object or the new one.
            # It has no exclusive create; a finished row is checked for first.
            if exclusive and self.fs.get_file_info(path).type != pafs.FileType.NotFound:
                return False
            pq.write_table(table, path, filesystem=self.fs)
            return True
        target = Path(path)
        tmp = durable.temporary_name(target)
        try:
            pq.write_table(table, str(tmp))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return durable.publish(tmp, target, exclusive=exclusive)

    def quarantine_corrupt(self) -> list[str]:
        """Move aside every stored row file that cannot be read as Parquet (empty, torn or
        foreign bytes) to ``<kind>/.corrupt/``, with a warning each; its cell then counts
        as not run and reruns. Returns the identities moved. Locally every file's footer
        is read; in an object store (whose PUTs are atomic) only empty objects are caught.
        """
        moved = []
        for kind in ("cells", "failed"):
            selector = pafs.FileSelector(f"{self._base}/{kind}", allow_not_found=True)
            for info in sorted(self.fs.get_file_info(selector), key=lambda i: i.path):
                name = info.base_name
                if info.type != pafs.FileType.File or name.startswith("."):
                    continue
                if not name.endswith(".parquet"):
                    continue
                try:
                    if info.size == 0:
                        raise ValueError("empty file")
                    if self._local:
                        pq.read_metadata(info.path)
                except FileNotFoundError:
                    continue  # moved or replaced meanwhile by another sweep
                except (pa.ArrowException, OSError, ValueError) as err:
                    identity = name[: -len(".parquet")]
                    aside = f"{self._base}/{kind}/.corrupt/{identity}.{int(time.time())}.parquet"
                    self.fs.create_dir(aside.rsplit("/", 1)[0], recursive=True)
                    try:
                        self.fs.move(info.path, aside)
                    except FileNotFoundError:
                        continue
                    first = str(err).strip().splitlines()[0] if str(err).strip() else "unreadable"
                    log.warning(
                        "%s: unreadable (%s); moved to %s, the cell runs again",
                        info.path,
                        first[:200],
                        aside,
                    )
                    moved.append(identity)
        return moved

    def _replace(self, table: pa.Table, path: str) -> None:
        """Write ``table`` to ``path``, replacing it whole (readers see old or new)."""
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if not self._local:
            pq.write_table(table, path, filesystem=self.fs)  # a PUT is atomic
            return
        tmp = durable.temporary_name(Path(path))
        try:
            pq.write_table(table, str(tmp))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        durable.publish(tmp, Path(path))

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
        tmp = durable.temporary_name(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            table.to_parquet(tmp, index=False)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        durable.publish(tmp, path)
        return path, table


def _concat(tables: list[pa.Table]) -> pa.Table:
    """One table from rows whose columns differ (task metrics, rows failed before training):
    missing columns become null, null-typed ones take the other rows' type."""
    return pa.concat_tables(tables, promote_options="permissive")
