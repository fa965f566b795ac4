"""`analyze`: validate the candidate laws, fit every source with its bootstrap, decide at
the targets, and write fits.json, PNG plots and report.html."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from annealscale.analysis import plots as plotting
from annealscale.analysis.budget import CostModel, Frontier, cost_model, frontier
from annealscale.analysis.compare import (
    NO_COST_TARGET,
    Decision,
    DecisionRule,
    decide,
    decide_target,
)
from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.laws import DEFAULT_CANDIDATES, Law, get_law
from annealscale.analysis.render import render_report
from annealscale.analysis.sources import (
    POOL_NOTE,
    POOLED_NOTE,
    SourceFits,
    fit_sources,
    source_seed,
)
from annealscale.analysis.table import ResultsTable, cell_means, load_results
from annealscale.analysis.target import Target
from annealscale.analysis.validate import Folds, Validation, candidate_laws, validate_laws

SCHEMA_VERSION = 3
METRIC = "domain_bpb"
PLOT_CAPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "curves": "Domain bpb vs training tokens per source: cells (shade and marker: curation "
        "spend), the chosen law at each sampled spend, and the bootstrap interval band of the "
        "curve used at the target (dotted line). Curves are solid over the sampled training "
        "tokens and dashed and lighter beyond them (the shaded region is extrapolated).",
        "frontier": "Cost-efficiency frontier: predicted domain bpb vs total cost, each source at "
        "its best split of the budget (bands: bootstrap interval); dots are cells, circled ones "
        "are Pareto-optimal. Each frontier is solid up to its source's dearest observed cell and "
        "dashed beyond it; past every observed cell the region is shaded (extrapolated).",
        "crossovers": "Crossovers: difference of predicted domain bpb between each pair of sources "
        "along the target's budget axis (below zero: the first source leads); shaded spans are "
        "the crossover intervals.",
        "held_out": "Held-out check: each law fitted without the largest training budget, "
        "predicting it (bars: observation intervals); points on the diagonal are exact.",
        "forgetting": "General bpb vs training tokens (forgetting), per source.",
    }
)


@dataclass(frozen=True, kw_only=True)
class Analysis:
    """What the results table supports: fits, validation and the decision, before anything
    is written (`evaluate`)."""

    table: ResultsTable
    fits: Mapping[str, SourceFits]
    """Per-source fits of the chosen law (with bootstrap and uncertainty) by source name."""
    validation: Validation
    decision: Decision
    costs: CostModel | None
    frontier: Frontier | None
    cells: pd.DataFrame
    """Cells with seeds averaged (and their total cost when costs are known)."""
    notes: tuple[str, ...]
    """Features skipped or assumptions made, and why."""
    settings: Mapping[str, Any]

    @property
    def law(self) -> Law:
        return self.validation.selected

    def warnings(self) -> list[str]:
        """What a reader of the headline must also know: target notes, fit flags, notes."""
        out = [n for td in self.decision.targets for n in td.notes]
        for s, sf in self.fits.items():
            res = sf.pooled.result
            if res is not None and res.flags:
                out.append(f"{s}: fit flags {', '.join(res.flags)}")
        return out + list(self.notes)


@dataclass(frozen=True, kw_only=True)
class AnalysisResult:
    """What `analyze` wrote and found."""

    fits_json: Path
    report_html: Path
    plots: Mapping[str, Path]
    """PNG path per plot name (see `PLOT_CAPTIONS`); a plot whose inputs are absent is left out."""
    fits: Mapping[str, SourceFits]
    """Per-source fits of the chosen law (with bootstrap) and per spend, by source name."""
    validation: Validation
    decision: Decision
    notes: tuple[str, ...]
    """Features skipped or assumptions made, and why."""
    analysis: Analysis | None = None

    @property
    def law(self) -> Law:
        return self.validation.selected


def analyze(
    results: pd.DataFrame | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    **options: Any,
) -> AnalysisResult:
    """`evaluate` the results table, then `write_report` into ``out_dir`` (created if
    needed: ``fits.json``, ``report.html`` and ``plots/*.png``). ``options`` are those of
    `evaluate`."""
    return write_report(evaluate(results, **options), out_dir)


def evaluate(
    results: pd.DataFrame | str | os.PathLike[str],
    *,
    target_tokens: float | None = None,
    target_spend: float | None = None,
    target_cost: float | None = None,
    law: str | Law = "auto",
    candidates: Sequence[str | Law] = DEFAULT_CANDIDATES,
    n_boot: int = 1000,
    level: float = 0.9,
    seed: int = 0,
    huber_delta: float = 1e-3,
    tolerance_pct: float = 1.0,
    rule: DecisionRule | None = None,
    folds: Folds | None = None,
    next_cells: int = 3,
    extra_messages: Sequence[str] = (),
) -> Analysis:
    """Fit, validate and compare the sources of a results table; write nothing.

    Parameters
    ----------
    results : DataFrame or path
        The results table (one row per cell and seed) or a Parquet file holding it.
        Required columns: ``source, curation_spend, train_tokens, domain_bpb``.
    target_tokens, target_spend : float, optional
        One target: the training tokens (and/or curation spend, USD) of the final
        anneal.
    target_cost : float, optional
        Another target: a total budget (USD) split across sources, curation spend
        and training tokens.
    law : str or Law
        ``"auto"`` chooses among ``candidates`` by rolling-origin extrapolation error; a
        name or a `Law` uses that law (it is still validated).
    candidates : sequence of str or Law
        Laws compared when ``law="auto"``, simplest first; those the table cannot
        fit are skipped with a note.
    n_boot : int
        Bootstrap resamples of the chosen law per source (at least 1000 for reported
        intervals).
    level : float
        Central probability of every interval.
    seed : int
        Seed of the resampling.
    huber_delta : float
        Huber threshold on log residuals (see `analysis.fit.fit_law`).
    tolerance_pct : float
        The cheapest cell reported is the cheapest within this percentage of the
        best observed domain bpb.
    rule : DecisionRule, optional
        When the headline may say "Buy" (P(best) threshold and practical margin).
    folds : Folds, optional
        How the rolling-origin validation cuts its folds.
    next_cells : int
        Cells the proposer suggests per target ("what to run next"; 0: none). Needs
        cost columns.
    extra_messages : sequence of str
        Sentences appended to the headline, e.g. why an adaptive sweep stopped and the
        compute it saved.

    Raises
    ------
    AnalysisError
        On an empty table, a missing required column, no finished cells, a target the
        table cannot answer (a cost target without cost columns, a spend target for a law
        without a spend term) or invalid settings.
    """
    if not 0.0 < level < 1.0:
        raise AnalysisError(f"level must lie in (0, 1); got {level}")
    if n_boot < 1:
        raise AnalysisError(f"n_boot must be >= 1; got {n_boot}")
    table = load_results(results)
    notes = list(table.notes)
    requested = _targets(target_tokens, target_spend, target_cost)
    costs, cost_note = cost_model(table)
    if costs is None and target_cost is not None:
        raise AnalysisError(NO_COST_TARGET)
    if cost_note:
        notes.append(cost_note)

    if isinstance(law, str) and law == "auto":
        laws, law_notes = candidate_laws(table, candidates)
        notes += law_notes
        if not laws:
            raise AnalysisError("none of the candidate laws can be fitted to this table")
    else:
        chosen = get_law(law)
        missing = [c for c in chosen.columns if not table.has(c)]
        if missing:
            raise AnalysisError(f"law {chosen.name!r} needs column(s) {', '.join(missing)}")
        laws = [chosen]
    if target_spend is not None:
        laws = _spend_aware(laws, table)
    fit_options = {"huber_delta": huber_delta}
    validation = validate_laws(
        table, laws, metric=METRIC, level=level, folds=folds, fit_options=fit_options
    )
    fits = with_uncertainty(
        fit_sources(
            table.finished,
            law=validation.selected,
            metric=METRIC,
            n_boot=n_boot,
            seed=seed,
            fitted=validation.of(validation.selected).fits,
            **fit_options,
        ),
        validation,
        seed,
    )

    cells = cell_means(table.finished)
    if costs is not None and "total_cost" not in cells.columns:
        cells["total_cost"] = [
            float(costs.total_cost(s, c, d))
            for s, c, d in zip(
                cells["source"], cells["curation_spend"], cells["train_tokens"], strict=True
            )
        ]
    targets = list(requested)
    if not targets:
        d_max = float(table.finished["train_tokens"].max())
        targets.append(Target(train_tokens=d_max))
        notes.append(
            "no target given: deciding at the largest sampled training-token count; pass "
            "--target-tokens (or --target-spend, --target-cost) for the budget you will spend"
        )

    front = None
    if costs is not None:
        front = frontier(
            fits,
            costs,
            cells,
            level=level,
            extra_costs=tuple(t.total_cost for t in targets if t.total_cost is not None),
        )
    decisions = []
    for t in targets:
        td = decide_target(
            t,
            fits,
            cells,
            costs=costs,
            frontier=front,
            level=level,
            rule=rule,
            checked=validation.checked,
            checked_variables=validation.checked_variables,
        )
        if next_cells > 0:
            proposed, why = _next_cells(table, t, next_cells)
            if why:
                notes.append(why)
            td = dataclasses.replace(td, next_cells=proposed)
        decisions.append(td)
    decision = decide(decisions, cells, tolerance_pct=tolerance_pct)
    if extra_messages:
        decision = dataclasses.replace(
            decision, messages=(*decision.messages, *map(str, extra_messages))
        )
    return Analysis(
        table=table,
        fits=MappingProxyType(fits),
        validation=validation,
        decision=decision,
        costs=costs,
        frontier=front,
        cells=cells,
        notes=tuple(notes),
        settings=MappingProxyType(
            {"huber_delta": huber_delta, "n_boot": n_boot, "level": level, "seed": seed}
        ),
    )


def _spend_aware(laws: Sequence[Law], table: ResultsTable) -> list[Law]:
    """The candidates that can answer a spend target (a spend or pool term), or an error
    that says what is missing."""
    aware = [law for law in laws if {"curation_spend", "unique_tokens"} & set(law.columns)]
    if aware:
        return aware
    missing = [c for c in ("unique_tokens", "domain_tokens") if not table.has(c)]
    why = (
        f"the table lacks the {' and '.join(missing)} column(s) a pool term needs"
        if missing
        else f"none of the laws ({', '.join(law.name for law in laws)}) has a spend term"
    )
    raise AnalysisError(
        f"target_spend (--target-spend) cannot be answered: {why}; drop the spend target "
        "or record unique_tokens and domain_tokens per cell"
    )


def with_uncertainty(
    fits: Mapping[str, SourceFits], validation: Validation, seed: int
) -> dict[str, SourceFits]:
    """Give each source the extrapolation error rate and the weighted candidate laws."""
    out = {}
    for s, sf in fits.items():
        alternatives = tuple(
            (v.fits[s], validation.weights.get(v.law.name, 0.0))
            for v in validation.laws
            if v.fits.get(s) is not None and validation.weights.get(v.law.name, 0.0) > 0
        )
        out[s] = dataclasses.replace(
            sf,
            error_rate=validation.error_rate,
            alternatives=alternatives,
            seed=source_seed(seed + 17, s),
        )
    return out


def _next_cells(
    table: ResultsTable, target: Target, n: int
) -> tuple[tuple[Mapping[str, Any], ...], str | None]:
    """The proposer's top ``n`` cells for ``target``, or why there are none."""
    from annealscale.analysis.propose_table import propose_from_results

    try:
        proposal = propose_from_results(table.rows, target=target, n=n)
    except AnalysisError as exc:
        return (), f"what to run next at {target.label}: none proposed ({exc})"
    return tuple(MappingProxyType(c.to_dict()) for c in proposal.cells), None


def write_report(analysis: Analysis, out_dir: str | os.PathLike[str]) -> AnalysisResult:
    """Write ``fits.json``, the PNG plots and ``report.html`` of ``analysis`` into
    ``out_dir`` (created if needed)."""
    a = analysis
    level = float(a.settings["level"])
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    figures = _figures(a.table, a.fits, a.decision, a.validation, a.frontier, a.cells, level)
    plot_paths = {
        name: plotting.save_png(fig, out / "plots" / f"{name}.png") for name, fig in figures.items()
    }

    fits_json = out / "fits.json"
    payload = fits_payload(
        a.table,
        a.fits,
        a.decision,
        validation=a.validation,
        costs=a.costs,
        front=a.frontier,
        notes=a.notes,
        settings=a.settings,
    )
    fits_json.write_text(dumps_json(payload) + "\n", encoding="utf-8")

    report_html = out / "report.html"
    html = render_report(
        table=a.table,
        fits=a.fits,
        decision=a.decision,
        validation=a.validation,
        costs=a.costs,
        notes=a.notes,
        plots=[(PLOT_CAPTIONS[name], path) for name, path in plot_paths.items()],
        level=level,
        n_boot=int(a.settings["n_boot"]),
    )
    report_html.write_text(html, encoding="utf-8")

    return AnalysisResult(
        fits_json=fits_json,
        report_html=report_html,
        plots=MappingProxyType(plot_paths),
        fits=a.fits,
        validation=a.validation,
        decision=a.decision,
        notes=a.notes,
        analysis=a,
    )


def _targets(tokens: float | None, spend: float | None, cost: float | None) -> list[Target]:
    out = []
    if tokens is not None or spend is not None:
        out.append(Target(train_tokens=tokens, curation_spend=spend))
    if cost is not None:
        out.append(Target(total_cost=cost))
    return out


def _figures(
    table: ResultsTable,
    fits: Mapping[str, SourceFits],
    decision: Decision,
    validation: Validation,
    front: Frontier | None,
    cells: pd.DataFrame,
    level: float,
) -> dict[str, Any]:
    base = table.baselines["base_domain_bpb"]
    primary = decision.primary
    figures: dict[str, Any] = {
        "curves": plotting.curves(table.finished, fits, primary, base, level),
    }
    if front is not None:
        cost_targets = [t.target.total_cost for t in decision.targets if t.target.total_cost]
        figures["frontier"] = plotting.cost_frontier(front, cells, base, cost_targets)
    xtd = next((t for t in decision.targets if t.curves), None)
    if xtd is not None:
        figures["crossovers"] = plotting.crossovers(xtd)
    if any(v.cells for v in validation.laws):
        figures["held_out"] = plotting.held_out(validation)
    if table.has("general_bpb"):
        figures["forgetting"] = plotting.forgetting(
            table.finished, cells, table.baselines["base_general_bpb"]
        )
    return figures


def fits_payload(
    table: ResultsTable,
    fits: Mapping[str, SourceFits],
    decision: Decision,
    *,
    validation: Validation,
    costs: CostModel | None,
    front: Frontier | None,
    notes: Sequence[str],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The content of fits.json."""
    law = validation.selected
    level = float(settings["level"])
    primary = decision.primary
    sources = {}
    for name, sf in fits.items():
        entry: dict[str, Any] = {
            "law": law.name,
            "formula": law.formula,
            "pooled_over_spends": True,
            "note": POOL_NOTE if sf.uses_spend() else POOLED_NOTE,
            **sf.pooled.to_dict(level=level),
            "pool": sf.pool.to_dict(),
            "per_spend": [
                {"curation_spend": g.curation_spend, **g.to_dict(level=level)} for g in sf.per_spend
            ],
        }
        pred = primary.predictions.get(name)
        entry["prediction"] = (
            None
            if pred is None
            else {
                "target": primary.target.label,
                "train_tokens": pred.train_tokens,
                "curation_spend": pred.curation_spend if pred.spend_modelled else None,
                METRIC: pred.predicted,
                "interval": [pred.lower, pred.upper],
                "extrapolated": pred.extrapolated,
                "extrapolation_factor": dict(pred.reach),
                "uncertainty": "fit (bootstrap), extrapolation error rate "
                f"{sf.error_rate:.3g} per e-fold of reach, and law disagreement",
            }
        )
        if sf.pooled.bootstrap is not None:
            entry["param_intervals"] = entry["bootstrap"]["param_intervals"]
        sources[name] = entry
    return {
        "schema_version": SCHEMA_VERSION,
        "metric": METRIC,
        "law": {**law.describe(), "selected_by": validation.reason},
        "candidates": [v.law.name for v in validation.laws],
        "fit_settings": {
            "objective": "Huber loss on log(metric), parameters fitted in log space",
            "huber_delta": None if math.isinf(settings["huber_delta"]) else settings["huber_delta"],
            "bootstrap": "resampling cells (rows) with replacement, re-centred on the point "
            "fit, widened by the extrapolation error and the candidate laws' spread",
            "n_boot": settings["n_boot"],
            "level": level,
            "seed": settings["seed"],
        },
        "input": {
            "path": table.source_path,
            "n_rows": len(table.rows),
            "n_finished": len(table.finished),
            "n_excluded": table.n_excluded,
        },
        "notes": list(notes),
        "baselines": dict(table.baselines),
        "sources": sources,
        "validation": validation.to_dict(),
        "targets": [td.to_dict() for td in decision.targets],
        "cost_model": None if costs is None else costs.to_dict(),
        "frontier": None if front is None else front.to_dict(),
        "decision": decision.to_dict(),
    }


def dumps_json(obj: Any) -> str:
    """JSON text with non-finite floats written as null (never NaN/Infinity literals)."""
    return json.dumps(_jsonable(obj), indent=2, allow_nan=False)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
