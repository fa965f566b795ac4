"""The results store: one Parquet file per finished cell, consolidated on read.

Each cell's row is written atomically (write to a temporary name, then rename), so a
crash never leaves a half-written result, and a cell whose identity already has a
``finished`` row is never run again.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from anneal.flops import flops_to_usd

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
    """Rows of one output directory: ``cells/<identity>.parquet`` and ``results.parquet``."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.cells_dir = self.out_dir / "cells"

    def write_row(self, row: dict) -> Path:
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        row = {**row, "written_at": time.time()}
        path = self.cells_dir / f"{row['cell_id']}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(pa.Table.from_pylist([row]), tmp)
        os.replace(tmp, path)
        return path

    def finished_ids(self) -> set[str]:
        table = self.read()
        if table.empty:
            return set()
        return set(table.loc[table["status"] == "finished", "cell_id"])

    def read(self) -> pd.DataFrame:
        files = sorted(self.cells_dir.glob("*.parquet")) if self.cells_dir.exists() else []
        if not files:
            return pd.DataFrame()
        return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)

    def consolidate(
        self, identities: set[str], *, usd_per_pflop: float
    ) -> tuple[Path, pd.DataFrame]:
        """Write ``results.parquet`` with the rows of ``identities`` (this spec's cells),
        sorted for reading, with compute costs priced at ``usd_per_pflop``.

        Rows of other specs that share the output directory stay in ``cells/`` untouched
        but are left out of the table; prices are not part of a cell's identity, so costs
        are recomputed here from the stored FLOPs.
        """
        table = self.read()
        if not table.empty:
            others = int((~table["cell_id"].isin(identities)).sum())
            if others:
                log.warning(
                    "%s: %d row(s) of cells not in this spec are kept in cells/ but left out "
                    "of results.parquet",
                    self.out_dir,
                    others,
                )
            table = table[table["cell_id"].isin(identities)]
            compute = table["train_flops"] + table["eval_flops"]
            table = table.assign(
                train_cost=flops_to_usd(compute, usd_per_pflop),
                total_cost=table["curation_cost"] + flops_to_usd(compute, usd_per_pflop),
            )
            table = table.sort_values(["source", "curation_spend", "train_tokens", "seed"])
        path = self.out_dir / "results.parquet"
        tmp = path.with_name(f".results.parquet.{os.getpid()}.tmp")
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path, table
