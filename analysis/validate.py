"""Rolling-origin validation: fit each candidate law on smaller budgets, predict the
larger ones, along every variable the table varies, and choose the law by how well it
extrapolated.

For a source and a variable (training tokens, curation spend, model size) with values
``v_1 < ... < v_m``, fold ``k`` fits the law on the cells with ``v <= v_k`` and
predicts every cell with ``v > v_k`` (seeds averaged); the origins are the last
``Folds.max_origins`` that leave at least ``Folds.min_fit_values`` values to fit on.
Errors are ``log(predicted / observed)`` with the reach ``log(v / v_k)``.

A law's score is the mean squared log error over the fold predictions that every
candidate made (like for like), averaged per (source, variable) group and then over
groups; the law with the lowest score is chosen, a simpler one when it is within
`SELECTION_MARGIN` of the best. Only point fits are made: no bootstrap, so selection is
cheap enough to run from a notebook on any table.

The fold errors of the chosen law also give the extrapolation error rate
(`analysis.uncertainty`); each held-out cell's interval comes from the rate estimated
without its own group (a leave-one-group-out check of that rate), so the reported
coverage is a fair test of it.

References
----------
.. [1] Tashman 2000, "Out-of-sample tests of forecasting accuracy: an analysis and
   review" (rolling-origin evaluation).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtri

from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.fit import FitResult
from annealscale.analysis.laws import Law, get_law
from annealscale.analysis.sources import fit_group
from annealscale.analysis.table import ResultsTable, cell_key
from annealscale.analysis.uncertainty import (
    REACH_VARIABLES,
    FoldError,
    extrapolation_rate,
    law_weights,
)

SELECTION_MARGIN = 0.02
"""A law with fewer parameters is kept when its score is within 2 % of the best."""
FOLD_FIT = {"n_refine": 4, "tol": 1e-10}
"""Fit settings of the fold fits: fewer refined starts and a looser tolerance than the
final fits (`analysis.fit.fit_law` defaults 8 and 1e-12); a fold's error is measured at
percent level, so its fit need not be converged to the last digit."""


@dataclass(frozen=True, kw_only=True)
class Folds:
    """How the rolling-origin folds are cut."""

    variables: tuple[str, ...] = REACH_VARIABLES
    """Variables to roll along; those the table does not vary (per source) are skipped."""
    max_origins: int = 3
    """Origins per (source, variable): the largest ones, which fit on the most data."""
    min_fit_values: int = 2
    """Distinct values of curation spend or model size a fold must fit on."""
    min_fit_tokens: int = 3
    """Distinct training-token counts a fold along tokens must fit on: a curve in tokens
    (offset, amplitude, exponent) through two counts extrapolates anywhere."""

    def __post_init__(self) -> None:
        unknown = [v for v in self.variables if v not in REACH_VARIABLES]
        if unknown:
            raise AnalysisError(
                f"fold variables must be among {', '.join(REACH_VARIABLES)}; got {unknown}"
            )
        if self.max_origins < 1 or self.min_fit_values < 2 or self.min_fit_tokens < 2:
            raise AnalysisError("need max_origins >= 1, min_fit_values and min_fit_tokens >= 2")

    def min_values(self, variable: str) -> int:
        return self.min_fit_tokens if variable == "train_tokens" else self.min_fit_values


@dataclass(frozen=True, kw_only=True)
class HeldOutCell:
    """One cell predicted by a fold fitted on smaller values of ``variable``."""

    source: str
    variable: str
    """The variable the fold rolled along."""
    origin: float
    """The largest value of ``variable`` the fold was fitted on."""
    curation_spend: float
    train_tokens: float
    n_seeds: int
    observed: float
    """Seed-averaged metric at the held-out cell."""
    predicted: float
    lower: float
    upper: float
    """Interval of the expected metric from the extrapolation error rate estimated
    without this cell's (source, variable) group."""
    obs_lower: float
    obs_upper: float
    """The same, widened by the seed noise of the observation."""
    model_params: float | None = None
    noise_var: float = 0.0
    """Variance of the log observation from seed noise (used by the rate)."""

    @property
    def reach(self) -> float:
        """Extrapolation factor of the prediction along ``variable``."""
        value = {"train_tokens": self.train_tokens, "curation_spend": self.curation_spend}.get(
            self.variable, self.model_params
        )
        return float(value) / self.origin if value and self.origin > 0 else math.nan

    @property
    def error(self) -> float:
        """Relative error ``predicted / observed - 1``."""
        return self.predicted / self.observed - 1.0

    @property
    def log_error(self) -> float:
        return math.log(self.predicted / self.observed)

    @property
    def inside(self) -> bool:
        return self.obs_lower <= self.observed <= self.obs_upper

    def fold_error(self) -> FoldError:
        return FoldError(
            group=(self.source, self.variable),
            log_error=self.log_error,
            log_reach=math.log(self.reach) if self.reach > 0 else math.nan,
            noise_var=self.noise_var,
        )

    def key(self) -> tuple[Any, ...]:
        return (
            self.source,
            self.variable,
            self.origin,
            self.curation_spend,
            self.train_tokens,
            self.model_params,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "variable": self.variable,
            "origin": self.origin,
            "reach": self.reach,
            "curation_spend": self.curation_spend,
            "train_tokens": self.train_tokens,
            "model_params": self.model_params,
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
    """One candidate law's rolling-origin check over every source, and its full fits."""

    law: Law
    cells: tuple[HeldOutCell, ...]
    skipped: Mapping[str, str]
    """Source -> why no fold of it could be checked."""
    fits: Mapping[str, FitResult | None] = field(default_factory=dict)
    """The law fitted to all cells of each source (None where it cannot be)."""
    score: float = math.nan
    """Mean squared log error on the fold predictions every candidate made (infinite when
    the law predicted a non-positive or non-finite metric in any fold)."""
    invalid: int = 0
    """Fold predictions that were not a finite positive metric."""

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(sorted({c.source for c in self.cells}))

    @property
    def mean_abs_error(self) -> float:
        """Mean over (source, variable) groups of the mean ``|log(predicted / observed)|``."""
        return _group_mean(self.cells, lambda c: abs(c.log_error))

    @property
    def coverage(self) -> float:
        """Share of held-out cells inside their observation interval."""
        return float(np.mean([c.inside for c in self.cells])) if self.cells else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": self.law.name,
            "n_params": self.law.n_params,
            "score_mse_log": self.score,
            "mean_abs_error": self.mean_abs_error,
            "coverage": self.coverage,
            "n_held_out": len(self.cells),
            "invalid_predictions": self.invalid,
            "cells": [c.to_dict() for c in self.cells],
            "skipped": dict(self.skipped),
        }


@dataclass(frozen=True, kw_only=True)
class Validation:
    """The rolling-origin check of every candidate and the law chosen from it."""

    laws: tuple[LawValidation, ...]
    selected: Law
    reason: str
    level: float
    folds: Folds = Folds()
    error_rate: float = math.nan
    """Extrapolation error rate of the chosen law (sd of log metric per e-fold of reach)."""
    weights: Mapping[str, float] = field(default_factory=dict)
    """Inverse-error weights of the candidates, for the law-disagreement term."""

    @property
    def checked(self) -> bool:
        """Whether the chosen law predicted any held-out cell."""
        chosen = self.of(self.selected)
        return chosen is not None and bool(chosen.cells)

    @property
    def checked_variables(self) -> frozenset[str]:
        """The variables along which the chosen law predicted held-out cells."""
        chosen = self.of(self.selected)
        return frozenset(c.variable for c in chosen.cells) if chosen is not None else frozenset()

    @property
    def held_out(self) -> str:
        rolled = sorted({c.variable for v in self.laws for c in v.cells})
        if not rolled:
            return "nothing: no variable has enough values to fit on some and predict others"
        return (
            f"rolling origins along {', '.join(rolled)}: each fold fits the "
            f"cells up to a value and predicts the larger ones (up to {self.folds.max_origins} "
            "origins per source and variable)"
        )

    def of(self, law: Law) -> LawValidation | None:
        return next((v for v in self.laws if v.law.name == law.name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "held_out": self.held_out,
            "level": self.level,
            "selected_law": self.selected.name,
            "reason": self.reason,
            "checked": self.checked,
            "checked_variables": sorted(self.checked_variables),
            "extrapolation_error_rate": self.error_rate,
            "law_weights": dict(self.weights),
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
    level: float = 0.9,
    folds: Folds | None = None,
    margin: float = SELECTION_MARGIN,
    fit_options: Mapping[str, Any] | None = None,
) -> Validation:
    """Roll every law along every varied variable, score it, choose one (point fits only)."""
    if not laws:
        raise AnalysisError("no candidate law to validate")
    folds = folds or Folds()
    options = dict(fit_options or {})
    noise = _noise_var(table.finished, metric)
    results = [_validate_law(table.finished, law, metric, folds, options, noise) for law in laws]
    checked = [{c.key() for c in v.cells} for v in results if v.cells]
    common = set.intersection(*checked) if checked else set()
    scored = []
    for v in results:
        # like for like where the laws share predictions, else each on its own
        shared = [c for c in v.cells if c.key() in common] if common else list(v.cells)
        score = _group_mean(shared, lambda c: c.log_error**2) if shared else math.nan
        if v.invalid:
            score = math.inf
        scored.append(dataclasses.replace(v, score=score))
    selected, reason = _select(scored, list(laws), margin)
    chosen = next(v for v in scored if v.law.name == selected.name)
    rate = extrapolation_rate(c.fold_error() for c in chosen.cells)
    with_intervals = tuple(
        dataclasses.replace(v, cells=_intervals(v.cells, level)) if v.cells else v for v in scored
    )
    weights = law_weights({v.law.name: v.score for v in scored})
    return Validation(
        laws=with_intervals,
        selected=selected,
        reason=reason,
        level=level,
        folds=folds,
        error_rate=rate,
        weights=MappingProxyType(weights),
    )


def _noise_var(finished: pd.DataFrame, metric: str) -> float:
    """Pooled variance of log metric between seeds of a cell (0 without repeats)."""
    key = cell_key(finished)
    logs = np.log(finished[metric].to_numpy(float))
    groups = finished.assign(_log=logs).groupby(key)["_log"]
    dev = groups.transform(lambda s: s - s.mean())
    dof = len(finished) - groups.ngroups
    return float(np.sum(dev**2) / dof) if dof > 0 else 0.0


def _validate_law(
    finished: pd.DataFrame,
    law: Law,
    metric: str,
    folds: Folds,
    options: Mapping[str, Any],
    noise_var: float,
) -> LawValidation:
    cells: list[HeldOutCell] = []
    skipped: dict[str, str] = {}
    fits: dict[str, FitResult | None] = {}
    invalid = 0
    for source, rows in finished.groupby("source", sort=True):
        name = str(source)
        full = fit_group(law, metric, name, None, rows, options)
        fits[name] = full.result
        found = 0
        for var in folds.variables:
            if var not in rows.columns:
                continue
            values = np.sort(rows[var].unique())
            origins = values[folds.min_values(var) - 1 : -1][-folds.max_origins :]
            for origin in origins:
                train, held = rows[rows[var] <= origin], rows[rows[var] > origin]
                g = fit_group(law, metric, name, None, train, {**FOLD_FIT, **options})
                if g.result is None:
                    continue
                found += 1
                for _, cell in held.groupby(cell_key(held), sort=True):
                    x = cell[list(law.columns)].to_numpy(float).mean(axis=0, keepdims=True)
                    with np.errstate(all="ignore"):
                        predicted = float(g.result.law.evaluate(x, g.result.theta)[0])
                    if not (math.isfinite(predicted) and predicted > 0):
                        invalid += 1
                        continue
                    cells.append(
                        HeldOutCell(
                            source=name,
                            variable=var,
                            origin=float(origin),
                            curation_spend=float(cell["curation_spend"].iloc[0]),
                            train_tokens=float(cell["train_tokens"].iloc[0]),
                            model_params=float(cell["model_params"].iloc[0])
                            if "model_params" in cell
                            else None,
                            n_seeds=len(cell),
                            observed=float(cell[metric].mean()),
                            predicted=predicted,
                            lower=predicted,
                            upper=predicted,
                            obs_lower=predicted,
                            obs_upper=predicted,
                            noise_var=noise_var / len(cell),
                        )
                    )
        if not found:
            skipped[name] = (
                f"too few values to fit on and hold out ({folds.min_fit_tokens + 1} "
                f"training-token counts, or {folds.min_fit_values + 1} spends or model sizes)"
            )
    return LawValidation(
        law=law,
        cells=tuple(cells),
        skipped=MappingProxyType(skipped),
        fits=MappingProxyType(fits),
        invalid=invalid,
    )


def _intervals(cells: Sequence[HeldOutCell], level: float) -> tuple[HeldOutCell, ...]:
    """Each cell's interval from the rate fitted without its (source, variable) group."""
    z = float(ndtri((1.0 + level) / 2.0))
    out = []
    for c in cells:
        group = (c.source, c.variable)
        rate = extrapolation_rate(e.fold_error() for e in cells if (e.source, e.variable) != group)
        sd = rate * math.log(c.reach)
        sd_obs = math.sqrt(sd**2 + c.noise_var)
        out.append(
            dataclasses.replace(
                c,
                lower=c.predicted * math.exp(-z * sd),
                upper=c.predicted * math.exp(z * sd),
                obs_lower=c.predicted * math.exp(-z * sd_obs),
                obs_upper=c.predicted * math.exp(z * sd_obs),
            )
        )
    return tuple(out)


def _group_mean(cells: Sequence[HeldOutCell], value: Any) -> float:
    if not cells:
        return math.nan
    groups: dict[tuple[str, str], list[float]] = {}
    for c in cells:
        groups.setdefault((c.source, c.variable), []).append(value(c))
    return float(np.mean([np.mean(v) for v in groups.values()]))


def _select(
    results: Sequence[LawValidation], laws: Sequence[Law], margin: float
) -> tuple[Law, str]:
    scored = [v for v in results if math.isfinite(v.score)] or [
        v for v in results if v.cells and not math.isnan(v.score)
    ]
    if not scored:
        return laws[0], (
            "no source has enough values of any budget variable to fit on some and predict "
            f"the others, so no law could be checked; using {laws[0].name!r}, the first "
            "candidate"
        )
    best = min(v.score for v in scored)
    order = sorted(scored, key=lambda v: (v.law.n_params, laws.index(v.law)))
    chosen = next(v for v in order if v.score <= best * (1.0 + margin) + 1e-12)
    others = ", ".join(
        f"{v.law.name} {_rms(v.score)}" for v in results if v is not chosen and v.cells
    )
    reason = (
        f"lowest extrapolation error on rolling-origin folds (simplest within {margin:.0%}): "
        f"{chosen.law.name} {_rms(chosen.score)} rms error predicting larger budgets"
        + (f" (others: {others})" if others else "")
    )
    return chosen.law, reason


def _rms(score: float) -> str:
    return f"{math.sqrt(score):.2%}" if math.isfinite(score) else "unchecked"
