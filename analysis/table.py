"""Load and validate the results table: one row per cell (source, spend, tokens, seed)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError

REQUIRED_COLUMNS: tuple[str, ...] = (
    "source",
    "curation_spend",  # USD
    "unique_tokens",  # tokens in the curated pool
    "train_tokens",  # D, tokens consumed by the anneal
    "seed",
    "status",  # "finished" or "failed"
    "domain_bpb",  # bits per byte, held-out domain text; the fitted metric
    "general_bpb",  # bits per byte, held-out general text (forgetting)
    "curation_cost",  # USD
    "train_flops",  # FLOPs
    "train_cost",  # USD
    "total_cost",  # USD
)
NUMERIC_COLUMNS: tuple[str, ...] = (
    "curation_spend",
    "unique_tokens",
    "train_tokens",
    "seed",
    "domain_bpb",
    "general_bpb",
    "curation_cost",
    "train_flops",
    "train_cost",
    "total_cost",
)
BASELINE_COLUMNS: tuple[str, ...] = ("base_domain_bpb", "base_general_bpb")
"""Optional: the base model's metric before annealing, the same on every row."""
FINISHED = "finished"
_RULES_ON_FINISHED = {
    "train_tokens": "positive",
    "curation_spend": "non-negative",
    "total_cost": "non-negative",
}


@dataclass(frozen=True, kw_only=True)
class ResultsTable:
    """A validated results table."""

    rows: pd.DataFrame
    """Every input row, required columns coerced to their types."""
    finished: pd.DataFrame
    """Rows with status "finished" and a finite, positive ``domain_bpb``: what is fitted."""
    baselines: dict[str, float | None]
    """``base_domain_bpb`` / ``base_general_bpb`` when the table carries them, else None."""
    source_path: str | None
    """Where the table was read from, None for an in-memory DataFrame."""

    @property
    def n_excluded(self) -> int:
        return len(self.rows) - len(self.finished)


def load_results(results: pd.DataFrame | str | os.PathLike[str]) -> ResultsTable:
    """Read (if given a path) and validate a results table.

    Raises
    ------
    AnalysisError
        If the file is missing, the table is empty, required columns are missing
        or not numeric, a baseline column varies, or no cell is finished.
    """
    source_path = None
    if isinstance(results, pd.DataFrame):
        df = results.copy()
    else:
        path = Path(results)
        if not path.exists():
            raise AnalysisError(
                f"results table not found at {path}; pass a DataFrame or a Parquet path"
            )
        source_path = str(path)
        df = pd.read_parquet(path)
    if len(df) == 0:
        raise AnalysisError("results table is empty; run a sweep first")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise AnalysisError(
            f"results table is missing required column(s) {', '.join(map(repr, missing))}; "
            f"expected {', '.join(REQUIRED_COLUMNS)}"
        )
    for col in NUMERIC_COLUMNS + tuple(c for c in BASELINE_COLUMNS if c in df.columns):
        try:
            df[col] = pd.to_numeric(df[col]).astype(float)
        except (TypeError, ValueError):
            raise AnalysisError(f"results column {col!r} must be numeric") from None
    df["source"] = df["source"].astype(str)
    df["status"] = df["status"].astype(str)

    ok = (df["status"] == FINISHED) & np.isfinite(df["domain_bpb"]) & (df["domain_bpb"] > 0)
    finished = df.loc[ok].reset_index(drop=True)
    if finished.empty:
        raise AnalysisError(
            "results table has no finished cells with a positive, finite 'domain_bpb'; "
            "run a sweep first or check the 'status' column"
        )
    for col, rule in _RULES_ON_FINISHED.items():
        values = finished[col]
        bad = ~np.isfinite(values) | ((values <= 0) if rule == "positive" else (values < 0))
        if bad.any():
            raise AnalysisError(
                f"results column {col!r} must be finite and {rule} on finished cells; "
                f"{int(bad.sum())} row(s) are not"
            )
    return ResultsTable(
        rows=df,
        finished=finished,
        baselines={c: _baseline(df, c) for c in BASELINE_COLUMNS},
        source_path=source_path,
    )


def _baseline(df: pd.DataFrame, col: str) -> float | None:
    if col not in df.columns:
        return None
    values = df[col].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    if not np.allclose(values, values[0], rtol=1e-9, atol=0.0):
        raise AnalysisError(
            f"results column {col!r} must hold the same value on every row; "
            f"found values from {values.min():.6g} to {values.max():.6g}"
        )
    return float(values[0])


def cell_means(finished: pd.DataFrame) -> pd.DataFrame:
    """Average the seeds of each cell ``(source, curation_spend, train_tokens)``.

    Returns one row per cell with the mean ``domain_bpb``, ``general_bpb`` and
    ``total_cost`` and the number of seeds ``n_seeds``, sorted by the cell key.
    """
    key = ["source", "curation_spend", "train_tokens"]
    return (
        finished.groupby(key, sort=True)
        .agg(
            domain_bpb=("domain_bpb", "mean"),
            general_bpb=("general_bpb", "mean"),
            total_cost=("total_cost", "mean"),
            n_seeds=("seed", "size"),
        )
        .reset_index()
    )
