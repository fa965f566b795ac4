"""The results store: one Parquet file per cell under the storage path, consolidated on read.

A finished cell's row is written once, atomically, to ``cells/<identity>.parquet`` and
never replaced, so its bytes survive every later sweep, restart or resume; a cell whose
identity has that file is never run again, by this sweep or any other sharing the storage
path. A failure goes to ``failed/<identity>.parquet`` with the error and the attempts so
far (replaced by the next failure, ignored once the cell finishes), so errored cells are
retried and their attempts keep counting.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from annealscale.core.units import flops_to_usd
from annealscale.tune.storage import filesystem

log = logging.getLogger(__name__)

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

    def failed_attempts(self, identities: set[str]) -> dict[str, int]:
        """Attempts recorded by the latest failure of each unfinished cell in ``identities``."""
        failed = (self._identities("failed") & set(identities)) - self.finished_ids()
        table = self._read("failed", failed)
        if table.empty:
            return {}
        return dict(zip(table["cell_id"], table["attempts"].astype(int), strict=True))

    def _read(self, kind: str, identities: set[str]) -> pd.DataFrame:
        frames = [
            pq.read_table(self._path(kind, i), filesystem=self.fs).to_pandas()
            for i in sorted(identities)
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def read(self, identities: set[str] | None = None) -> pd.DataFrame:
        """Finished rows, plus the latest failure of every cell not finished."""
        finished = self.finished_ids()
        failed = self._identities("failed") - finished
        if identities is not None:
            finished &= set(identities)
            failed &= set(identities)
        frames = [f for f in (self._read("cells", finished), self._read("failed", failed))]
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
