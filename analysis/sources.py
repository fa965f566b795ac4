"""Per-source models: the fitted law with its bootstrap, and the pool it is evaluated on.

A source's law is fitted to all its finished cells (every curation spend
together); a law with a pool term sees the spend through ``U(c)``, a law in
training tokens alone treats differences between spends as scatter. Each source
is also fitted with ``power_law_D`` per curation spend, without a bootstrap, to
show how the spend moves the curve.

To predict at a budget the law's variables are set from the budget: training
tokens ``D``, curation spend ``c``, the pool ``U(c)`` (interpolated between the
sampled spends in log-log, extrapolated with the fitted elasticity), the domain
tokens ``r * D`` (``r`` the source's domain fraction) and the model size (the
largest sampled).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from annealscale.analysis.bootstrap import Bootstrap, bootstrap_law
from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.fit import FitResult, fit_law
from annealscale.analysis.fit_cache import remembered
from annealscale.analysis.laws import POWER_LAW_D, Law, get_law
from annealscale.analysis.uncertainty import log_reach, reach, widen

POOLED_NOTE = (
    "fitted on all finished cells of the source, every curation spend together; "
    "the law has no spend term, so differences between spends count as scatter"
)
POOL_NOTE = (
    "fitted on all finished cells of the source, every curation spend together; "
    "the spend enters through the pool U(c)"
)
BUDGET_COLUMNS = (
    "train_tokens",
    "curation_spend",
    "unique_tokens",
    "domain_tokens",
    "model_params",
)
"""Law columns that a budget (training tokens and curation spend) determines."""


@dataclass(frozen=True, kw_only=True)
class PoolModel:
    """What a curation spend buys for one source, and the other inputs of its law."""

    spends: tuple[float, ...]
    """Sampled curation spends (USD), ascending."""
    unique_tokens: tuple[float, ...] | None
    """Mean pool size at each sampled spend (tokens); None without the column."""
    elasticity: float | None
    """``gamma`` of ``U ~ c**gamma`` fitted in log-log; None with fewer than two positive
    spends (the pool is then held at its sampled size)."""
    domain_fraction: float | None
    """``r``: median of domain tokens over training tokens; None without the column."""
    model_params: float | None
    """The largest sampled model size (parameters); None without the column."""
    train_tokens: tuple[float, float]
    """Sampled ``(min, max)`` training tokens."""
    token_counts: int = 2
    """Distinct training-token counts sampled."""

    def unique_tokens_at(self, spend: ArrayLike) -> np.ndarray:
        """``U(c)`` (tokens): log-log interpolation, extrapolated with the elasticity."""
        if self.unique_tokens is None:
            raise AnalysisError("no 'unique_tokens' column: U(c) is unknown")
        c = np.asarray(spend, dtype=float)
        pos = [(s, u) for s, u in zip(self.spends, self.unique_tokens, strict=True) if s > 0]
        if self.elasticity is None or len(pos) < 2:
            return np.full(c.shape, float(np.max(self.unique_tokens)))
        log_c = np.log([s for s, _ in pos])
        log_u = np.log([u for _, u in pos])
        lc = np.log(np.maximum(c, 1e-300))
        inside = np.interp(lc, log_c, log_u)
        below = log_u[0] + self.elasticity * (lc - log_c[0])
        above = log_u[-1] + self.elasticity * (lc - log_c[-1])
        return np.exp(np.where(lc < log_c[0], below, np.where(lc > log_c[-1], above, inside)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "spends": list(self.spends),
            "unique_tokens": None if self.unique_tokens is None else list(self.unique_tokens),
            "elasticity": self.elasticity,
            "domain_fraction": self.domain_fraction,
            "model_params": self.model_params,
            "train_tokens": list(self.train_tokens),
            "token_counts": self.token_counts,
        }


def pool_model(rows: pd.DataFrame) -> PoolModel:
    """The `PoolModel` of one source's finished rows."""
    spends = tuple(float(s) for s in sorted(rows["curation_spend"].unique()))
    unique = None
    elasticity = None
    if "unique_tokens" in rows.columns:
        per_spend = rows.groupby("curation_spend")["unique_tokens"].mean()
        unique = tuple(float(per_spend.loc[s]) for s in spends)
        pos = [(s, u) for s, u in zip(spends, unique, strict=True) if s > 0]
        if len(pos) >= 2:
            lc, lu = np.log([s for s, _ in pos]), np.log([u for _, u in pos])
            elasticity = float(np.polyfit(lc, lu, 1)[0])
    fraction = None
    if "domain_tokens" in rows.columns:
        fraction = float(np.median(rows["domain_tokens"] / rows["train_tokens"]))
    n_params = float(rows["model_params"].max()) if "model_params" in rows.columns else None
    d = rows["train_tokens"]
    return PoolModel(
        spends=spends,
        unique_tokens=unique,
        elasticity=elasticity,
        domain_fraction=fraction,
        model_params=n_params,
        train_tokens=(float(d.min()), float(d.max())),
        token_counts=int(d.nunique()),
    )


def law_inputs(law: Law, pool: PoolModel, train_tokens: ArrayLike, spend: ArrayLike) -> np.ndarray:
    """The law's design ``(n, k)`` at budgets ``(train_tokens, spend)`` (broadcast together)."""
    d, c = _budgets(train_tokens, spend)
    cols = []
    for col in law.columns:
        if col == "train_tokens":
            cols.append(d)
        elif col == "curation_spend":
            cols.append(c)
        elif col == "unique_tokens":
            cols.append(pool.unique_tokens_at(c))
        elif col == "domain_tokens":
            if pool.domain_fraction is None:
                raise AnalysisError("no 'domain_tokens' column: the domain fraction is unknown")
            cols.append(pool.domain_fraction * d)
        elif col == "model_params":
            if pool.model_params is None:
                raise AnalysisError("no 'model_params' column: the model size is unknown")
            cols.append(np.full(d.shape, pool.model_params))
        else:
            raise AnalysisError(
                f"law {law.name!r} uses column {col!r}, which a budget does not determine; "
                f"laws used for decisions may use {', '.join(BUDGET_COLUMNS)}"
            )
    return np.stack(cols, axis=-1)  # (n, k)


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
    bootstrap: Bootstrap | None = None

    def predict(self, x: Any) -> np.ndarray | None:
        return None if self.result is None else self.result.predict(x)

    def to_dict(self, at: Mapping[str, float] | None = None, level: float = 0.9) -> dict[str, Any]:
        """JSON-ready summary, with the prediction at the law columns in ``at`` if given."""
        out: dict[str, Any] = {"n_points": self.n_points, "error": self.error}
        if self.result is None:
            out.update(params=None, quality=None, x_range=None, flags=[], prediction=None)
            return out
        fit = self.result.to_dict()
        law = self.result.law
        out.update(
            params=fit["params"],
            quality=fit["quality"],
            x_range=fit["x_range"],
            flags=fit["flags"],
            bootstrap=None if self.bootstrap is None else self.bootstrap.to_dict(level),
        )
        if at is not None and all(c in at for c in law.columns):
            x = np.array([[at[c] for c in law.columns]])
            out["prediction"] = {
                **{c: at[c] for c in law.columns},
                self.metric: float(self.result.predict(x)[0]),
                "extrapolated": any(
                    at[c] > self.result.x_range[v][1] or at[c] < self.result.x_range[v][0]
                    for v, c in zip(law.variables, law.columns, strict=True)
                ),
            }
        return out


@dataclass(frozen=True, kw_only=True)
class SourceFits:
    """The fits of one source, what its law is evaluated on, and how far to trust it.

    `draws` are the source's belief about its expected metric at a budget: the
    bootstrap of the chosen law re-centred on its point fit, widened by the
    extrapolation error (``error_rate`` times the log reach beyond the sampled budgets)
    and by the disagreement of the candidate laws (``alternatives``, weighted); see
    `analysis.uncertainty`.
    """

    source: str
    pooled: GroupFit
    """The law over all the source's cells (every spend), with its bootstrap."""
    per_spend: tuple[GroupFit, ...]
    """``power_law_D`` per curation spend (no bootstrap)."""
    pool: PoolModel
    error_rate: float = 0.0
    """Extrapolation error: sd of the log metric per e-fold of reach (0: bootstrap only)."""
    alternatives: tuple[tuple[FitResult, float], ...] = ()
    """Candidate laws fitted to the same cells with their weights (the chosen one included);
    their spread is the law-disagreement term."""
    seed: int = 0

    @property
    def law(self) -> Law | None:
        return None if self.pooled.result is None else self.pooled.result.law

    def design(self, train_tokens: ArrayLike, spend: ArrayLike) -> np.ndarray:
        law = self.law
        if law is None:
            raise AnalysisError(f"source {self.source!r} has no fit: {self.pooled.error}")
        return law_inputs(law, self.pool, train_tokens, spend)

    def predict(self, train_tokens: ArrayLike, spend: ArrayLike) -> np.ndarray:
        """Point prediction at budgets ``(train_tokens, spend)``, shape ``(n,)``."""
        res = self.pooled.result
        if res is None:
            raise AnalysisError(f"source {self.source!r} has no fit: {self.pooled.error}")
        return res.law.evaluate(self.design(train_tokens, spend), res.theta)

    def curve_draws(self, train_tokens: ArrayLike, spend: ArrayLike) -> np.ndarray:
        """Bootstrap refits of the chosen law, re-centred on the point fit: ``(B, n)``."""
        boot = self.pooled.bootstrap
        if boot is None:
            raise AnalysisError(f"source {self.source!r} has no bootstrap")
        return boot.draws_at(self.design(train_tokens, spend))

    def draws(self, train_tokens: ArrayLike, spend: ArrayLike) -> np.ndarray:
        """Draws ``(B, n)`` of the expected metric at budgets ``(train_tokens, spend)``:
        fit, extrapolation and law uncertainty (see the class docstring)."""
        d, c = _budgets(train_tokens, spend)
        curves = self.curve_draws(d, c)  # median = the point fit, per budget
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log(np.where(curves > 0, curves, np.nan))
            boot_var = np.nan_to_num(np.nanvar(logs, axis=0)) if len(curves) > 1 else 0.0
        # The rate was measured on fold errors, which include the fit's own parameter
        # error: the extrapolation term adds only what the bootstrap does not already hold.
        reach_var = np.maximum((self.error_rate * self.log_reach(d, c)) ** 2 - boot_var, 0.0)
        extra = np.sqrt(reach_var + self.law_spread(d, c))
        z = np.random.default_rng(self.seed).standard_normal(len(curves))
        return np.exp(widen(logs, extra, z))

    def reach(self, train_tokens: ArrayLike, spend: ArrayLike) -> dict[str, np.ndarray]:
        """Extrapolation factor (>= 1) per budget variable at ``(train_tokens, spend)``."""
        d, c = _budgets(train_tokens, spend)
        point = {"train_tokens": d}
        sampled = {"train_tokens": self.pool.train_tokens}
        if self.uses_spend():
            point["curation_spend"] = c
            sampled["curation_spend"] = (self.pool.spends[0], self.pool.spends[-1])
        return reach(point, sampled)

    def log_reach(self, train_tokens: ArrayLike, spend: ArrayLike) -> np.ndarray:
        return log_reach(self.reach(train_tokens, spend))

    def law_spread(self, train_tokens: ArrayLike, spend: ArrayLike) -> np.ndarray:
        """Weighted variance of the candidate laws' log predictions about the chosen one's."""
        res = self.pooled.result
        d, c = _budgets(train_tokens, spend)
        if res is None or len(self.alternatives) < 2:
            return np.zeros(d.shape)
        point = np.log(np.maximum(self.predict(d, c), 1e-300))
        total, weight = np.zeros(d.shape), 0.0
        for fit, w in self.alternatives:
            try:
                x = law_inputs(fit.law, self.pool, d, c)
            except AnalysisError:
                continue
            with np.errstate(all="ignore"):
                pred = fit.law.evaluate(x, fit.theta)
            if not np.all(np.isfinite(pred) & (pred > 0)):
                continue
            total += w * (np.log(pred) - point) ** 2
            weight += w
        return total / weight if weight > 0 else np.zeros(d.shape)

    def extrapolated(self, train_tokens: float, spend: float) -> bool:
        d_lo, d_hi = self.pool.train_tokens
        in_tokens = d_lo <= train_tokens <= d_hi
        in_spend = self.pool.spends[0] <= spend <= self.pool.spends[-1]
        return not (in_tokens and (in_spend or not self.uses_spend()))

    def uses_spend(self) -> bool:
        """Whether the law's prediction depends on the curation spend."""
        law = self.law
        return law is not None and bool({"curation_spend", "unique_tokens"} & set(law.columns))


def _budgets(train_tokens: ArrayLike, spend: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Training tokens and spends as 1-d float arrays broadcast together."""
    d, c = np.broadcast_arrays(
        np.atleast_1d(np.asarray(train_tokens, dtype=float)),
        np.atleast_1d(np.asarray(spend, dtype=float)),
    )
    return d, c


def source_seed(seed: int, source: str) -> int:
    """A resampling seed per source: independent streams, stable across runs and row orders."""
    return (seed * 1_000_003 + zlib.crc32(source.encode())) % (2**32)


def fit_sources(
    finished: pd.DataFrame,
    *,
    law: str | Law = "power_law_D",
    metric: str = "domain_bpb",
    n_boot: int = 0,
    seed: int = 0,
    per_spend: bool = True,
    fitted: Mapping[str, FitResult | None] | None = None,
    **fit_options: Any,
) -> dict[str, SourceFits]:
    """Fit ``law`` to ``metric`` per source (with ``n_boot`` bootstrap resamples) and
    ``power_law_D`` per (source, curation spend).

    A group that cannot be fitted (e.g. fewer than two distinct variable values) is
    kept with its reason in ``error`` so the report can show it. ``fitted`` holds fits of
    ``law`` to each source's rows already made (by the validation), reused as they are.
    """
    law = get_law(law)
    out: dict[str, SourceFits] = {}
    for source, rows in finished.groupby("source", sort=True):
        name = str(source)
        spend_fits: tuple[GroupFit, ...] = ()
        if per_spend:
            spend_fits = tuple(
                fit_group(POWER_LAW_D, metric, name, float(spend), group, fit_options)
                for spend, group in rows.groupby("curation_spend", sort=True)
            )
        pooled = fit_group(
            law,
            metric,
            name,
            None,
            rows,
            fit_options,
            n_boot=n_boot,
            seed=source_seed(seed, name),
            fitted=(fitted or {}).get(name),
        )
        out[name] = SourceFits(
            source=name, pooled=pooled, per_spend=spend_fits, pool=pool_model(rows)
        )
    return out


def fit_group(
    law: Law,
    metric: str,
    source: str,
    spend: float | None,
    rows: pd.DataFrame,
    fit_options: Mapping[str, Any],
    *,
    n_boot: int = 0,
    seed: int = 0,
    fitted: FitResult | None = None,
) -> GroupFit:
    """Fit one group of rows, with a bootstrap when ``n_boot > 0``; failures become ``error``.

    ``fitted``: the point fit of these rows, when already made (it is not refitted)."""
    missing = [c for c in law.columns if c not in rows.columns]
    if missing:
        return GroupFit(
            source=source,
            curation_spend=spend,
            metric=metric,
            n_points=len(rows),
            result=None,
            error=f"law {law.name!r} needs column(s) {', '.join(missing)}",
        )
    x = rows[list(law.columns)].to_numpy(dtype=float)  # (n, k)
    y = rows[metric].to_numpy(dtype=float)  # (n,)
    boot = None
    try:
        result: FitResult | None = fitted
        if result is None:
            result = remembered(
                "fit", law, (x, y), fit_options, lambda: fit_law(x, y, law=law, **fit_options)
            )
        error = None
        if n_boot > 0 and result is not None:
            start = result.theta
            huber_delta = fit_options.get("huber_delta", 1e-3)
            boot = remembered(
                "bootstrap",
                law,
                (x, y, start),
                {"n_boot": n_boot, "seed": seed, "huber_delta": huber_delta},
                lambda: bootstrap_law(
                    x,
                    y,
                    law=law,
                    n_boot=n_boot,
                    seed=seed,
                    start=start,
                    huber_delta=huber_delta,
                ),
            )
    except AnalysisError as exc:
        result, error = None, str(exc)
    return GroupFit(
        source=source,
        curation_spend=spend,
        metric=metric,
        n_points=len(y),
        result=result,
        error=error,
        bootstrap=boot,
    )
