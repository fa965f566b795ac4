"""Held-out validation: fit on all but the largest budget, predict it, and choose the law.

For each candidate law and source, the cells at the source's largest training-token
count are held out; the law is fitted (with its bootstrap) on the rest and asked
for the held-out cells. Reported per held-out cell: the relative error of the
prediction against the seed-averaged observation, the interval of the fitted
curve, the interval for an observation (curve plus the fit's residual noise over
the cell's seeds), and whether the observation falls inside it.

The law used for decisions is the one with the lowest mean held-out error
(``|log(predicted / observed)|``, averaged per source, then over sources); a law
with more parameters must beat a simpler one by more than ``margin`` (relative)
to be chosen, since one held-out budget per source is a noisy judge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from annealscale.analysis.laws import Law, get_law
from annealscale.analysis.sources import fit_group, source_seed
from annealscale.analysis.table import ResultsTable, cell_key

SELECTION_MARGIN = 0.1


@dataclass(frozen=True, kw_only=True)
class HeldOutCell:
    source: str
    curation_spend: float
    train_tokens: float
    n_seeds: int
    observed: float
    """Seed-averaged metric at the held-out cell."""
    predicted: float
    lower: float
    upper: float
    """Interval of the fitted curve."""
    obs_lower: float
    obs_upper: float
    """Interval for the seed-averaged observation (curve and residual noise)."""

    @property
    def error(self) -> float:
        """Relative error ``predicted / observed - 1``."""
        return self.predicted / self.observed - 1.0

    @property
    def inside(self) -> bool:
        return self.obs_lower <= self.observed <= self.obs_upper

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "curation_spend": self.curation_spend,
            "train_tokens": self.train_tokens,
            "n_seeds": self.n_seeds,
            "observed": self.observed,
            "predicted": self.predicted,
            "interval": [self.lower, self.upper],
            "observation_interval": [self.obs_lower, self.obs_upper],
            "relative_error": self.error,
            "inside_interval": self.inside,
        }


@dataclass(frozen=True, kw_only=True)
class LawValidation:
    """One candidate law's held-out check over every source."""

    law: Law
    cells: tuple[HeldOutCell, ...]
    skipped: Mapping[str, str]
    """Source -> why it could not be validated."""

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(sorted({c.source for c in self.cells}))

    @property
    def mean_abs_error(self) -> float:
        """Mean over sources of the mean ``|log(predicted / observed)|`` of their cells."""
        if not self.cells:
            return math.nan
        per_source = [
            np.mean([abs(math.log(c.predicted / c.observed)) for c in self.cells if c.source == s])
            for s in self.sources
        ]
        return float(np.mean(per_source))

    @property
    def coverage(self) -> float:
        """Share of held-out cells inside their observation interval."""
        return float(np.mean([c.inside for c in self.cells])) if self.cells else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": self.law.name,
            "n_params": self.law.n_params,
            "mean_abs_error": self.mean_abs_error,
            "coverage": self.coverage,
            "cells": [c.to_dict() for c in self.cells],
            "skipped": dict(self.skipped),
        }


@dataclass(frozen=True, kw_only=True)
class Validation:
    """The held-out check of every candidate and the law chosen from it."""

    laws: tuple[LawValidation, ...]
    selected: Law
    reason: str
    level: float
    held_out: str = "the largest training-token count of each source"

    def of(self, law: Law) -> LawValidation | None:
        return next((v for v in self.laws if v.law.name == law.name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "held_out": self.held_out,
            "level": self.level,
            "selected_law": self.selected.name,
            "reason": self.reason,
            "laws": {v.law.name: v.to_dict() for v in self.laws},
        }


def candidate_laws(
    table: ResultsTable, candidates: Sequence[str | Law]
) -> tuple[list[Law], list[str]]:
    """The candidates the table can fit, and a note for each one it cannot."""
    laws, notes = [], []
    rows = table.finished
    for cand in candidates:
        law = get_law(cand)
        missing = [c for c in law.columns if not table.has(c)]
        if missing:
            notes.append(f"law {law.name!r} skipped: needs column(s) {', '.join(missing)}")
            continue
        if (
            "model_params" in law.columns
            and rows.groupby("source")["model_params"].nunique().max() < 2
        ):
            notes.append(f"law {law.name!r} skipped: every source has a single model size")
            continue
        if (
            "kappa" in law.param_names
            and rows.groupby("source")["unique_tokens"].nunique().max() < 2
        ):
            notes.append(f"law {law.name!r} skipped: no source has two or more pool sizes")
            continue
        laws.append(law)
    return laws, notes


def validate_laws(
    table: ResultsTable,
    laws: Sequence[Law],
    *,
    metric: str = "domain_bpb",
    n_boot: int,
    level: float,
    seed: int,
    margin: float = SELECTION_MARGIN,
    fit_options: Mapping[str, Any] | None = None,
) -> Validation:
    """Hold out each source's largest training budget, check every law, choose one."""
    options = dict(fit_options or {})
    results = tuple(
        _validate_law(table.finished, law, metric, n_boot, level, seed, options) for law in laws
    )
    selected, reason = _select(results, laws, margin)
    return Validation(laws=results, selected=selected, reason=reason, level=level)


def _validate_law(
    finished: pd.DataFrame,
    law: Law,
    metric: str,
    n_boot: int,
    level: float,
    seed: int,
    options: Mapping[str, Any],
) -> LawValidation:
    cells: list[HeldOutCell] = []
    skipped: dict[str, str] = {}
    q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    for source, rows in finished.groupby("source", sort=True):
        name = str(source)
        d_max = rows["train_tokens"].max()
        train, held = rows[rows["train_tokens"] < d_max], rows[rows["train_tokens"] == d_max]
        if train["train_tokens"].nunique() < 2:
            skipped[name] = "fewer than two training-token values below the largest"
            continue
        g = fit_group(
            law, metric, name, None, train, options, n_boot=n_boot, seed=source_seed(seed, name)
        )
        if g.result is None or g.bootstrap is None:
            skipped[name] = g.error or "no fit"
            continue
        rng = np.random.default_rng(source_seed(seed + 7, name))
        for _, cell in held.groupby(cell_key(held), sort=True):
            x = cell[list(law.columns)].to_numpy(float).mean(axis=0, keepdims=True)  # (1, k)
            observed = float(cell[metric].mean())
            draws = g.bootstrap.draws(x)[:, 0]  # (B,)
            obs = g.bootstrap.observation_draws(x, n_seeds=len(cell), rng=rng)[:, 0]
            lo, hi = np.quantile(draws, q)
            olo, ohi = np.quantile(obs, q)
            cells.append(
                HeldOutCell(
                    source=name,
                    curation_spend=float(cell["curation_spend"].iloc[0]),
                    train_tokens=float(d_max),
                    n_seeds=len(cell),
                    observed=observed,
                    predicted=float(g.result.law.evaluate(x, g.result.theta)[0]),
                    lower=float(lo),
                    upper=float(hi),
                    obs_lower=float(olo),
                    obs_upper=float(ohi),
                )
            )
    return LawValidation(law=law, cells=tuple(cells), skipped=MappingProxyType(skipped))


def _select(
    results: tuple[LawValidation, ...], laws: Sequence[Law], margin: float
) -> tuple[Law, str]:
    if not laws:
        raise ValueError("no candidate law")
    validated = set().union(*(set(v.sources) for v in results)) if results else set()
    if not validated:
        return laws[0], (
            f"no source has two or more training-token values below its largest, so nothing "
            f"could be held out; using {laws[0].name!r}, the first candidate"
        )
    eligible = [v for v in results if set(v.sources) == validated]
    if not eligible:
        best_cover = max(results, key=lambda v: len(v.sources))
        return best_cover.law, (
            f"no law could be validated on every source; {best_cover.law.name!r} covers the most"
        )
    best = min(v.mean_abs_error for v in eligible)
    order = sorted(eligible, key=lambda v: (v.law.n_params, laws.index(v.law)))
    chosen = next(v for v in order if v.mean_abs_error <= best * (1.0 + margin) + 1e-6)
    others = ", ".join(
        f"{v.law.name} {v.mean_abs_error:.2%}" for v in results if v is not chosen and v.cells
    )
    reason = (
        f"lowest held-out error within {margin:.0%} among the simplest: {chosen.law.name} "
        f"{chosen.mean_abs_error:.2%} mean error at the held-out budget"
        + (f" (others: {others})" if others else "")
    )
    return chosen.law, reason
