"""Load and validate the results table: one row per cell (source, spend, tokens, seed).

Only four columns are required, so a table from another tool works; every other
column is optional and the features that need it are skipped with a note.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from annealscale.analysis.errors import AnalysisError

REQUIRED_COLUMNS: tuple[str, ...] = (
    "source",
    "curation_spend",  # USD
    "train_tokens",  # D, tokens consumed by the anneal
    "domain_bpb",  # bits per byte, held-out domain text; the fitted metric
)
OPTIONAL_COLUMNS: Mapping[str, str] = MappingProxyType(
    {
        "seed": "seed of the anneal (rows without it count as separate seeds)",
        "status": '"finished" or "failed" (every row counts as finished without it)',
        "unique_tokens": "tokens in the curated pool U(c); needed by curation-aware laws",
        "domain_tokens": "domain tokens consumed, r*D; else repetition * unique_tokens",
        "repetition": "domain epochs r*D/U (alias: domain_epochs)",
        "domain_epochs": "domain epochs r*D/U",
        "model_params": "non-embedding parameters N; needed by the laws in N",
        "general_bpb": "bits per byte on general text (forgetting plot)",
        "curation_cost": "USD actually paid to curate (else the curation spend)",
        "train_flops": "FLOPs of the anneal",
        "train_cost": "USD of the anneal (else total_cost - curation_cost)",
        "total_cost": "USD of the cell (else curation_cost + train_cost); needed by cost "
        "targets, the frontier and the budget split",
        "base_domain_bpb": "the base model's domain bpb before annealing",
        "base_general_bpb": "the base model's general bpb before annealing",
    }
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
    "domain_tokens",
    "repetition",
    "domain_epochs",
    "model_params",
)
BASELINE_COLUMNS: tuple[str, ...] = ("base_domain_bpb", "base_general_bpb")
"""Optional: the base model's metric before annealing, the same on every row."""
CELL_KEY: tuple[str, ...] = ("source", "curation_spend", "train_tokens")
FINISHED = "finished"
_RULES_ON_FINISHED = {
    "train_tokens": "positive",
    "curation_spend": "non-negative",
    "total_cost": "non-negative",
    "unique_tokens": "positive",
    "domain_tokens": "positive",
    "model_params": "positive",
}


@dataclass(frozen=True, kw_only=True)
class ResultsTable:
    """A validated results table."""

    rows: pd.DataFrame
    """Every input row, known columns coerced to their types, derived columns added."""
    finished: pd.DataFrame
    """Rows with status "finished" and a finite, positive ``domain_bpb``, in a canonical
    order (so nothing downstream depends on the input's row order): what is fitted."""
    baselines: dict[str, float | None]
    """``base_domain_bpb`` / ``base_general_bpb`` when the table carries them, else None."""
    source_path: str | None
    """Where the table was read from, None for an in-memory DataFrame."""
    notes: tuple[str, ...] = ()
    """What was assumed or derived because a column was absent."""

    @property
    def n_excluded(self) -> int:
        return len(self.rows) - len(self.finished)

    def has(self, *columns: str) -> bool:
        """Whether every named column is present (given or derived) with finite values on
        the finished rows."""
        return all(
            c in self.finished.columns and bool(np.all(np.isfinite(self.finished[c])))
            for c in columns
        )


def load_results(results: pd.DataFrame | str | os.PathLike[str]) -> ResultsTable:
    """Read (if given a path) and validate a results table.

    Raises
    ------
    AnalysisError
        If the file is missing, the table is empty, a required column is missing
        or a known column is not numeric, a baseline column varies, or no cell is
        finished.
    """
    source_path = None
    if isinstance(results, pd.DataFrame):
        df = results.reset_index(drop=True).copy()  # the caller's frame is left alone
    else:
        path = Path(results)
        if not path.exists():
            raise AnalysisError(
                f"results table not found at {path}; pass a DataFrame or a Parquet path"
            )
        source_path = str(path)
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a non-Parquet file
            raise AnalysisError(f"cannot read {path} as Parquet: {exc}") from None
    if len(df) == 0:
        raise AnalysisError("results table is empty; run a sweep first")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise AnalysisError(
            f"results table is missing required column(s) {', '.join(map(repr, missing))}; "
            f"required: {', '.join(REQUIRED_COLUMNS)} (others optional)"
        )
    for col in NUMERIC_COLUMNS + tuple(c for c in BASELINE_COLUMNS if c in df.columns):
        if col not in df.columns:
            continue
        try:
            df[col] = pd.to_numeric(df[col]).astype(float)
        except (TypeError, ValueError):
            raise AnalysisError(f"results column {col!r} must be numeric") from None
    df["source"] = df["source"].astype(str)
    notes = _fill_defaults(df)
    failures = failure_notes(df)
    notes += failures

    ok = (df["status"] == FINISHED) & np.isfinite(df["domain_bpb"]) & (df["domain_bpb"] > 0)
    finished = df.loc[ok]
    if finished.empty:
        if failures:
            raise AnalysisError(
                "results table has no finished cells: "
                + "; ".join(failures)
                + "; fix the spec (e.g. lower the learning rate or weight decay) and rerun, or "
                "check the 'status' column"
            )
        raise AnalysisError(
            "results table has no finished cells with a positive, finite 'domain_bpb'; "
            "run a sweep first or check the 'status' column"
        )
    for col, rule in _RULES_ON_FINISHED.items():
        if col not in finished.columns:
            continue
        values = finished[col]
        bad = ~np.isfinite(values) | ((values <= 0) if rule == "positive" else (values < 0))
        if bad.any():
            raise AnalysisError(
                f"results column {col!r} must be finite and {rule} on finished cells; "
                f"{int(bad.sum())} row(s) are not"
            )
    order = [*cell_key(finished), "seed", "domain_bpb"]
    finished = finished.sort_values(order, kind="mergesort").reset_index(drop=True)
    return ResultsTable(
        rows=df,
        finished=finished,
        baselines={c: _baseline(df, c) for c in BASELINE_COLUMNS},
        source_path=source_path,
        notes=tuple(notes),
    )


def failure_notes(df: pd.DataFrame, most: int = 5) -> list[str]:
    """One sentence per failed cell (the first ``most``): which cell, and why (the
    ``reason`` column: ``diverged`` for a non-finite loss or metric, else ``failed``)."""
    failed = df[df["status"] == "failed"]
    notes = []
    for row in failed.head(most).to_dict("records"):
        reason = row.get("reason") if isinstance(row.get("reason"), str) else "failed"
        reason = "failed" if reason == "error" else reason
        name = str(row.get("cell_id") or "")[:12]
        notes.append(
            f"cell {name} ({row['source']}, spend {row['curation_spend']:g}, "
            f"{row['train_tokens']:g} tokens) {reason}"
        )
    if len(failed) > most:
        notes.append(f"{len(failed) - most} more cell(s) failed")
    return notes


def _fill_defaults(df: pd.DataFrame) -> list[str]:
    """Add the optional columns that can be assumed or derived; say what was done."""
    notes = []
    if "status" not in df.columns:
        df["status"] = FINISHED
        notes.append("no 'status' column: every row with a finite domain_bpb counts as finished")
    df["status"] = df["status"].astype(str)
    if "seed" not in df.columns:
        # numbered in metric order within each cell, so the numbering ignores row order
        key = cell_key(df)
        ordered = df.sort_values([*key, "domain_bpb"], kind="mergesort")
        seeds = ordered.groupby(key, sort=False, dropna=False).cumcount()
        df["seed"] = seeds.reindex(df.index).astype(float)
        notes.append("no 'seed' column: repeated cells count as separate seeds")
    if "domain_tokens" not in df.columns and "unique_tokens" in df.columns:
        epochs = next((c for c in ("repetition", "domain_epochs") if c in df.columns), None)
        if epochs is not None:
            df["domain_tokens"] = df[epochs] * df["unique_tokens"]
            notes.append(f"domain_tokens derived as {epochs} * unique_tokens")
    if "total_cost" not in df.columns and {"curation_cost", "train_cost"} <= set(df.columns):
        df["total_cost"] = df["curation_cost"] + df["train_cost"]
        notes.append("total_cost derived as curation_cost + train_cost")
    if "train_cost" not in df.columns and {"total_cost", "curation_cost"} <= set(df.columns):
        df["train_cost"] = df["total_cost"] - df["curation_cost"]
        notes.append("train_cost derived as total_cost - curation_cost")
    return notes


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


def cell_key(df: pd.DataFrame) -> list[str]:
    """Columns naming a cell (seeds aside): source, spend, tokens, and the model size if given."""
    return [*CELL_KEY, *(["model_params"] if "model_params" in df.columns else [])]


def cell_means(finished: pd.DataFrame) -> pd.DataFrame:
    """Average the seeds of each cell ``(source, curation_spend, train_tokens[, model_params])``.

    Returns one row per cell with the mean of each metric and cost column present
    (``domain_bpb`` always; ``general_bpb``, ``total_cost``, ``unique_tokens``,
    ``domain_tokens`` ... when given) and the number of seeds ``n_seeds``, sorted by
    the cell key.
    """
    key = cell_key(finished)
    means = [
        c
        for c in (
            "domain_bpb",
            "general_bpb",
            "total_cost",
            "curation_cost",
            "train_cost",
            "unique_tokens",
            "domain_tokens",
        )
        if c in finished.columns
    ]
    agg = {c: (c, "mean") for c in means}
    return finished.groupby(key, sort=True).agg(**agg, n_seeds=("domain_bpb", "size")).reset_index()
