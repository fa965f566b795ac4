"""Fit a law per source (all spends together) and per (source, curation spend)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.fit import FitResult, fit_law
from analysis.laws import Law, get_law

POOLED_NOTE = (
    "fitted on all finished cells of the source, every curation spend together; "
    "the law has no spend term, so differences between spends count as scatter"
)


@dataclass(frozen=True, kw_only=True)
class GroupFit:
    """The fit of one group of cells, or why there is none."""

    source: str
    curation_spend: float | None
    """USD; None for the fit over all spends of the source."""
    metric: str
    """The fitted column, e.g. ``domain_bpb``."""
    n_points: int
    result: FitResult | None
    error: str | None
    """Why the group could not be fitted (e.g. a single training-token value)."""

    def predict(self, x: Any) -> np.ndarray | None:
        return None if self.result is None else self.result.predict(x)

    def to_dict(self, at: Mapping[str, float]) -> dict[str, Any]:
        """JSON-ready summary, with the prediction at the variables in ``at``."""
        out: dict[str, Any] = {"n_points": self.n_points, "error": self.error}
        if self.result is None:
            out.update(params=None, quality=None, x_range=None, flags=[], prediction=None)
            return out
        fit = self.result.to_dict()
        law = self.result.law
        x = np.array([[at[v] for v in law.variables]])
        out.update(
            params=fit["params"],
            quality=fit["quality"],
            x_range=fit["x_range"],
            flags=fit["flags"],
            prediction={
                **{c: at[v] for v, c in zip(law.variables, law.columns, strict=True)},
                self.metric: float(self.result.predict(x)[0]),
                "extrapolated": any(
                    at[v] > self.result.x_range[v][1] or at[v] < self.result.x_range[v][0]
                    for v in law.variables
                ),
            },
        )
        return out


@dataclass(frozen=True, kw_only=True)
class SourceFits:
    """The fits of one source."""

    source: str
    pooled: GroupFit
    per_spend: tuple[GroupFit, ...]


def fit_sources(
    finished: pd.DataFrame,
    *,
    law: str | Law = "power_law_D",
    metric: str = "domain_bpb",
    **fit_options: Any,
) -> dict[str, SourceFits]:
    """Fit ``law`` to ``metric`` per source and per (source, curation spend).

    A group that cannot be fitted (fewer than two distinct variable values) is kept
    with its reason in ``error`` so the report can show it.
    """
    law = get_law(law)
    out: dict[str, SourceFits] = {}
    for source, rows in finished.groupby("source", sort=True):
        per_spend = tuple(
            _fit_group(law, metric, str(source), float(spend), group, fit_options)
            for spend, group in rows.groupby("curation_spend", sort=True)
        )
        pooled = _fit_group(law, metric, str(source), None, rows, fit_options)
        out[str(source)] = SourceFits(source=str(source), pooled=pooled, per_spend=per_spend)
    return out


def _fit_group(
    law: Law,
    metric: str,
    source: str,
    spend: float | None,
    rows: pd.DataFrame,
    fit_options: Mapping[str, Any],
) -> GroupFit:
    x = rows[list(law.columns)].to_numpy(dtype=float)  # (n, k)
    y = rows[metric].to_numpy(dtype=float)  # (n,)
    try:
        result: FitResult | None = fit_law(x, y, law=law, **fit_options)
        error = None
    except AnalysisError as exc:
        result, error = None, str(exc)
    return GroupFit(
        source=source,
        curation_spend=spend,
        metric=metric,
        n_points=len(y),
        result=result,
        error=error,
    )
