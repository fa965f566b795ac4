"""Costs and budgets: what a (spend, tokens) choice costs, the best split of a total
budget per source, the cost-efficiency frontier, and the allocation across sources.

The cost of a choice is ``curation_cost(c) + train_cost(D)``: curation cost is the
spend times the source's measured ratio of curation cost to spend (1 without a
``curation_cost`` column), and training cost is linear in training tokens,
``k0 + k * D``, fitted over every finished cell (the model is the same for all
sources). A table with ``total_cost`` but no split is fitted as
``a * c + k0 + k * D`` instead.

Allocation across sources: the per-source laws say what each source's data does
alone; none of the sweep's cells mixes sources, so the metric of a mixture is not
identified. The budget therefore goes to one source, split between its curation
and its training tokens; the table of every source's best split shows what the
alternatives would predict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar, nnls

from annealscale.analysis.sources import SourceFits
from annealscale.analysis.table import ResultsTable

SPEND_GRID = 48
"""Curation spends tried per source when splitting a budget (log-spaced)."""
SPEND_EXTRAPOLATION = 10.0
"""A split may spend up to this factor beyond the largest sampled spend (flagged)."""


@dataclass(frozen=True, kw_only=True)
class CostModel:
    """Total cost (USD) of curation spend ``c`` and training tokens ``D`` per source."""

    usd_per_train_token: float
    train_fixed_usd: float
    """Per-cell training cost that does not scale with tokens (evaluation)."""
    curation_ratio: Mapping[str, float]
    """Curation cost per USD of spend, per source."""
    basis: str
    """How the model was estimated, for the report."""

    def curation_cost(self, source: str, spend: Any) -> np.ndarray:
        return self.curation_ratio.get(source, 1.0) * np.asarray(spend, dtype=float)

    def train_cost(self, train_tokens: Any) -> np.ndarray:
        return self.train_fixed_usd + self.usd_per_train_token * np.asarray(train_tokens, float)

    def total_cost(self, source: str, spend: Any, train_tokens: Any) -> np.ndarray:
        return self.curation_cost(source, spend) + self.train_cost(train_tokens)

    def train_tokens_for(self, source: str, total: Any, spend: Any) -> np.ndarray:
        """Training tokens that a total budget buys after curation spend ``c``; NaN if none."""
        left = np.asarray(total, float) - self.curation_cost(source, spend) - self.train_fixed_usd
        d = left / self.usd_per_train_token
        return np.where(d > 0, d, np.nan)

    def to_dict(self) -> dict[str, Any]:
        return {
            "usd_per_train_token": self.usd_per_train_token,
            "train_fixed_usd": self.train_fixed_usd,
            "curation_ratio": dict(self.curation_ratio),
            "basis": self.basis,
        }


def cost_model(table: ResultsTable) -> tuple[CostModel | None, str | None]:
    """Estimate the `CostModel`; ``(None, why)`` when the table has no costs."""
    rows = table.finished
    d = rows["train_tokens"].to_numpy(float)
    ratios: dict[str, float] = {}
    if table.has("train_cost"):
        if table.has("curation_cost"):
            for source, g in rows.groupby("source"):
                pos = g[g["curation_spend"] > 0]
                ratio = (pos["curation_cost"] / pos["curation_spend"]).median() if len(pos) else 1.0
                ratios[str(source)] = float(ratio) if math.isfinite(ratio) else 1.0
        k0, k = _line(d, rows["train_cost"].to_numpy(float))
        basis = "train_cost ~ k0 + k * train_tokens; curation cost = spend * measured ratio"
    elif table.has("total_cost"):
        a = np.column_stack([rows["curation_spend"], np.ones(len(rows)), d])
        coef, _ = nnls(a, rows["total_cost"].to_numpy(float))
        ratio, k0, k = (float(v) for v in coef)
        ratios = {str(s): ratio for s in rows["source"].unique()}
        basis = "total_cost ~ a * curation_spend + k0 + k * train_tokens (no cost split given)"
    else:
        return None, (
            "no cost columns (total_cost, or curation_cost and train_cost): cost targets, the "
            "cost frontier and the budget split are skipped"
        )
    if not k > 0:
        return None, "training cost does not grow with training tokens: no cost model"
    return (
        CostModel(
            usd_per_train_token=k,
            train_fixed_usd=k0,
            curation_ratio=MappingProxyType(ratios),
            basis=basis,
        ),
        None,
    )


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``y = k0 + k x`` with ``k0 >= 0`` (else through the origin)."""
    if len(np.unique(x)) >= 2:
        k, k0 = np.polyfit(x, y, 1)
        if k0 >= 0 and k > 0:
            return float(k0), float(k)
    return 0.0, float(np.sum(x * y) / np.sum(x * x))


@dataclass(frozen=True, kw_only=True)
class Split:
    """One source's choice of curation spend and training tokens for a total budget."""

    source: str
    total_cost: float
    curation_spend: float
    train_tokens: float
    curation_cost: float
    train_cost: float
    predicted: float
    extrapolated: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "total_cost": self.total_cost,
            "curation_spend": self.curation_spend,
            "train_tokens": self.train_tokens,
            "curation_cost": self.curation_cost,
            "train_cost": self.train_cost,
            "curation_share": self.curation_cost / self.total_cost,
            "predicted": self.predicted,
            "extrapolated": self.extrapolated,
        }


def spend_candidates(sf: SourceFits, total: float) -> np.ndarray:
    """Curation spends to try for a budget: the smallest sampled spend if the law ignores
    spend, else a log grid from the smallest sampled to ``SPEND_EXTRAPOLATION`` times the
    largest (and below the budget)."""
    spends = np.array(sf.pool.spends)
    lo = float(spends[spends > 0].min()) if np.any(spends > 0) else float(spends.min())
    if not sf.uses_spend() or lo <= 0:
        return np.array([float(spends.min())])
    hi = min(float(spends.max()) * SPEND_EXTRAPOLATION, total)
    if hi <= lo:
        return np.array([lo])
    return np.geomspace(lo, hi, SPEND_GRID)


def best_splits(
    sf: SourceFits, cm: CostModel, totals: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid-best ``(spend, tokens, predicted)`` for each budget in ``totals`` ``(T,)``.

    Infeasible budgets (not even the smallest spend fits) give NaN.
    """
    t_count = len(totals)
    best_c = np.full(t_count, np.nan)
    best_d = np.full(t_count, np.nan)
    best_p = np.full(t_count, np.inf)
    for t, total in enumerate(totals):
        c = spend_candidates(sf, float(total))
        d = cm.train_tokens_for(sf.source, total, c)
        ok = np.isfinite(d)
        if not ok.any():
            continue
        pred = sf.predict(d[ok], c[ok])
        k = int(np.argmin(pred))
        best_c[t], best_d[t], best_p[t] = c[ok][k], d[ok][k], pred[k]
    best_p[~np.isfinite(best_p)] = np.nan
    return best_c, best_d, best_p


def best_split(sf: SourceFits, cm: CostModel, total: float) -> Split | None:
    """The split of ``total`` (USD) between curation spend and training tokens that
    minimises the source's predicted metric; None if the budget cannot pay for any."""
    c, d, p = (float(v[0]) for v in best_splits(sf, cm, np.array([total])))
    if not math.isfinite(p):
        return None
    grid = spend_candidates(sf, total)
    if len(grid) > 2:
        i = int(np.argmin(np.abs(grid - c)))
        lo_c, hi_c = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]

        def f(log_c: float) -> float:
            cc = math.exp(log_c)
            dd = cm.train_tokens_for(sf.source, total, cc)
            return float(sf.predict(dd, cc)[0]) if np.isfinite(dd) else math.inf

        res = minimize_scalar(
            f, bounds=(math.log(lo_c), math.log(hi_c)), method="bounded", options={"xatol": 1e-6}
        )
        if res.success and res.fun < p:
            c = math.exp(float(res.x))
            d = float(cm.train_tokens_for(sf.source, total, c))
            p = float(res.fun)
    return Split(
        source=sf.source,
        total_cost=float(total),
        curation_spend=c,
        train_tokens=d,
        curation_cost=float(cm.curation_cost(sf.source, c)),
        train_cost=float(cm.train_cost(d)),
        predicted=p,
        extrapolated=sf.extrapolated(d, c),
    )


@dataclass(frozen=True, kw_only=True)
class Frontier:
    """Predicted metric against total cost, each source at its best split per budget."""

    costs: np.ndarray
    """(T,) budgets (USD)."""
    curves: Mapping[str, Mapping[str, np.ndarray]]
    """Per source: ``predicted``, ``lower``, ``upper``, ``curation_spend``, ``train_tokens``,
    each ``(T,)`` (NaN where the budget is infeasible)."""
    draws: Mapping[str, np.ndarray]
    """Per source: ``(B, T)`` bootstrap predictions at the point-optimal splits."""
    best_source: tuple[str | None, ...]
    """Source with the lowest predicted metric at each budget."""
    observed_pareto: pd.DataFrame
    """Cells (seeds averaged) that no other cell beats on both cost and metric."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_cost": self.costs.tolist(),
            "best_source": list(self.best_source),
            "sources": {
                s: {k: v.tolist() for k, v in curve.items()} for s, curve in self.curves.items()
            },
            "observed_pareto": self.observed_pareto.to_dict(orient="records"),
        }


def frontier(
    fits: Mapping[str, SourceFits],
    cm: CostModel,
    cells: pd.DataFrame,
    *,
    level: float,
    extra_costs: tuple[float, ...] = (),
    n_costs: int = 40,
) -> Frontier:
    """The cost-efficiency frontier over budgets from the cheapest sampled cell to 3x the
    dearest (or the largest cost target)."""
    lo = float(cells["total_cost"].min())
    hi = 3.0 * max([float(cells["total_cost"].max()), *extra_costs])
    costs = np.geomspace(max(lo, 1e-12), hi, n_costs)
    curves: dict[str, dict[str, np.ndarray]] = {}
    draws: dict[str, np.ndarray] = {}
    q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    for s, sf in fits.items():
        if sf.pooled.result is None:
            continue
        c, d, p = best_splits(sf, cm, costs)
        ok = np.isfinite(p)
        dr = np.full((_n_boot(sf), len(costs)), np.nan)
        lo_b, hi_b = np.full_like(p, np.nan), np.full_like(p, np.nan)
        if ok.any() and sf.pooled.bootstrap is not None:
            dr[:, ok] = sf.draws(d[ok], c[ok])
            lo_b[ok], hi_b[ok] = np.quantile(dr[:, ok], q, axis=0)
        curves[s] = {
            "predicted": p,
            "lower": np.where(ok, lo_b, np.nan),
            "upper": np.where(ok, hi_b, np.nan),
            "curation_spend": c,
            "train_tokens": d,
        }
        draws[s] = dr
    best: list[str | None] = []
    for t in range(len(costs)):
        vals = {
            s: cur["predicted"][t] for s, cur in curves.items() if np.isfinite(cur["predicted"][t])
        }
        best.append(min(vals, key=lambda k: (vals[k], k)) if vals else None)
    return Frontier(
        costs=costs,
        curves=MappingProxyType(curves),
        draws=MappingProxyType(draws),
        best_source=tuple(best),
        observed_pareto=pareto_cells(cells),
    )


def _n_boot(sf: SourceFits) -> int:
    return 0 if sf.pooled.bootstrap is None else sf.pooled.bootstrap.n_boot


def pareto_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells not beaten on both total cost and domain bpb by another cell."""
    ordered = cells.sort_values(["total_cost", "domain_bpb"], kind="mergesort")
    keep, best = [], math.inf
    for i, bpb in zip(ordered.index, ordered["domain_bpb"], strict=True):
        if bpb < best:
            keep.append(i)
            best = bpb
    cols = [c for c in ("source", "curation_spend", "train_tokens", "total_cost", "domain_bpb")]
    return ordered.loc[keep, cols].reset_index(drop=True)


@dataclass(frozen=True, kw_only=True)
class Allocation:
    """The split of a total budget across sources, curation spend and training tokens."""

    total_cost: float
    splits: Mapping[str, Split]
    """Each source's best split of the whole budget."""
    chosen: str | None
    """The source whose best split predicts the lowest metric."""
    note: str

    def to_dict(self) -> dict[str, Any]:
        chosen = self.splits.get(self.chosen) if self.chosen else None
        return {
            "total_cost": self.total_cost,
            "chosen_source": self.chosen,
            "split": None if chosen is None else chosen.to_dict(),
            "per_source": {s: sp.to_dict() for s, sp in self.splits.items()},
            "note": self.note,
        }


ALLOCATION_NOTE = (
    "the whole budget goes to one source: no cell mixes sources, so the metric of a "
    "mixture is not identified by the per-source laws"
)


def allocate(fits: Mapping[str, SourceFits], cm: CostModel, total: float) -> Allocation:
    """Split ``total`` (USD) across sources, curation spend and training tokens."""
    splits = {}
    for s, sf in fits.items():
        if sf.pooled.result is None:
            continue
        sp = best_split(sf, cm, total)
        if sp is not None:
            splits[s] = sp
    chosen = min(splits, key=lambda s: (splits[s].predicted, s)) if splits else None
    return Allocation(
        total_cost=float(total),
        splits=MappingProxyType(splits),
        chosen=chosen,
        note=ALLOCATION_NOTE,
    )
