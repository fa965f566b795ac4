"""`analyze`: validate the candidate laws, fit every source with its bootstrap, decide at
the targets, and write fits.json, PNG plots and report.html."""

from __future__ import annotations

import dataclasses
import functools
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
from annealscale.analysis.objective import BPB, Objective
from annealscale.analysis.render import render_report
from annealscale.analysis.sources import (
    POOL_NOTE,
    POOLED_NOTE,
    SourceFits,
    fit_sources,
    source_seed,
)
from annealscale.analysis.table import ResultsTable, cell_means, load_results, read_results
from annealscale.analysis.target import Target
from annealscale.analysis.two_step import TwoStep, fit_task_link, link_sources, resolve_metric
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
TWO_STEP_CAPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "curves": "Step 1: the task's loss (bits per byte of the correct answer) vs training "
        "tokens per source: cells, the chosen law and the bootstrap band of the curve used at "
        "the target; the red diamond is the predicted loss at the target.",
        "link": "Step 2: accuracy vs task loss for every cell (a colour per source), the "
        "fitted sigmoid link shared by the sources and its bootstrap band; diamonds are the "
        "predictions at the target (loss interval across, accuracy interval up, through "
        "both steps). Shaded: losses below every observed cell (the link extrapolates).",
        "held_out": PLOT_CAPTIONS["held_out"].replace("Held-out check:", "Step 1 held-out check:"),
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
    two_step: TwoStep | None = None
    """Step 1's decisions and the link, when the decided metric is a task score."""

    @property
    def law(self) -> Law:
        return self.validation.selected

    @property
    def objective(self) -> Objective:
        return self.decision.primary.objective

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
    metric: str = METRIC,
    chance: float | None = None,
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
    metric : str
        The decided metric: ``domain_bpb``, a task's loss ``task/<task>/bpb``, or a task
        score ``task/<task>/<metric>`` (e.g. ``acc``), predicted in two steps: the law of
        ``task/<task>/bpb`` per source, then the task's sigmoid link to the score (see
        `analysis.two_step`); higher scores are better.
    chance : float, optional
        The score's floor for the link (e.g. ``1 / choices``); None fits it.

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
    if chance is not None and not 0.0 <= chance < 1.0:
        raise AnalysisError(f"chance (--chance) must lie in [0, 1), e.g. 0.25; got {chance}")
    tm = None
    if metric == METRIC:
        table = load_results(results)
    else:
        frame, path = read_results(results)
        tm = resolve_metric(metric, frame.columns)
        assert tm is not None
        table = dataclasses.replace(load_results(frame, metric=tm.loss), source_path=path)
    objective = BPB if tm is None else tm.objective
    loss_objective = BPB if tm is None else tm.loss_objective
    notes = list(table.notes)
    requested = _targets(target_tokens, target_spend, target_cost)
    costs, cost_note = cost_model(table)
    if costs is None and target_cost is not None:
        raise AnalysisError(NO_COST_TARGET)
    if tm is not None and target_cost is not None:
        raise AnalysisError(
            f"target_cost (--target-cost) is not supported with --metric {metric}; decide at "
            "--target-tokens (and --target-spend), or on domain_bpb"
        )
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
        table, laws, metric=table.metric, level=level, folds=folds, fit_options=fit_options
    )
    fits = with_uncertainty(
        fit_sources(
            table.finished,
            law=validation.selected,
            metric=table.metric,
            n_boot=n_boot,
            seed=seed,
            fitted=validation.of(validation.selected).fits,
            **fit_options,
        ),
        validation,
        seed,
    )

    extra = () if tm is None else tuple(c for c in (tm.score, tm.stderr) if c is not None)
    cells = cell_means(table.finished, table.metric, extra)
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

    link = None
    if tm is not None and tm.score is not None:
        link = fit_task_link(table.finished, tm, chance=chance, n_boot=n_boot, seed=seed)
    if tm is not None and next_cells > 0:
        notes.append(f"what to run next is proposed on domain_bpb only, not on {metric}")
        next_cells = 0
    front = None
    if costs is not None and tm is None:
        front = frontier(
            fits,
            costs,
            cells,
            level=level,
            extra_costs=tuple(t.total_cost for t in targets if t.total_cost is not None),
        )
    decisions, loss_decisions = [], []
    linked = None if link is None else link_sources(fits, link, seed)
    decide_at = functools.partial(
        decide_target,
        costs=costs,
        level=level,
        rule=rule,
        checked=validation.checked,
        checked_variables=validation.checked_variables,
    )
    for t in targets:
        td = decide_at(t, fits, cells, frontier=front, objective=loss_objective)
        if linked is not None:
            loss_decisions.append(td)
            # the linked fits answer what decide_target asks of fits
            td = decide_at(t, linked, cells, frontier=None, objective=objective)  # type: ignore[arg-type]
        if next_cells > 0:
            proposed, why = _next_cells(table, t, next_cells)
            if why:
                notes.append(why)
            td = dataclasses.replace(td, next_cells=proposed)
        decisions.append(td)
    steps = None
    if link is not None and tm is not None:
        steps = TwoStep(task=tm, link=link, loss_decisions=tuple(loss_decisions), chance=chance)
        notes += steps.notes()
    decision = decide(decisions, cells, tolerance_pct=tolerance_pct)
    if steps is not None:
        decision = dataclasses.replace(
            decision, messages=(decision.messages[0], steps.sentence(), *decision.messages[1:])
        )
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
            {
                "huber_delta": huber_delta,
                "n_boot": n_boot,
                "level": level,
                "seed": seed,
                **({} if tm is None else {"metric": metric, "chance": chance}),
            }
        ),
        two_step=steps,
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
    if a.two_step is not None:
        figures = _two_step_figures(a, level)
        captions = TWO_STEP_CAPTIONS
    else:
        figures = _figures(a.table, a.fits, a.decision, a.validation, a.frontier, a.cells, level)
        captions = PLOT_CAPTIONS
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
        two_step=a.two_step,
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
        plots=[(captions[name], path) for name, path in plot_paths.items()],
        level=level,
        n_boot=int(a.settings["n_boot"]),
        two_step=a.two_step,
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
    base = table.baselines["base_domain_bpb"] if table.metric == METRIC else None
    primary = decision.primary
    figures: dict[str, Any] = {
        "curves": plotting.curves(
            table.finished,
            fits,
            primary,
            base,
            level,
            metric=table.metric,
            label=primary.objective.label,
        ),
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


def _two_step_figures(a: Analysis, level: float) -> dict[str, Any]:
    """Step 1 (the task loss's law per source) and step 2 (the link), and the held-out check."""
    steps = a.two_step
    assert steps is not None and steps.task.score is not None
    tm = steps.task
    figures: dict[str, Any] = {
        "curves": plotting.curves(
            a.table.finished,
            a.fits,
            steps.loss_decisions[0],
            None,
            level,
            metric=tm.loss,
            label=tm.loss_objective.label,
        ),
        "link": plotting.link(
            a.table.finished,
            tm.loss,
            tm.score,
            steps.link,
            a.decision.primary,
            steps.loss_decisions[0],
            level,
            a.objective.label,
        ),
    }
    if any(v.cells for v in a.validation.laws):
        figures["held_out"] = plotting.held_out(a.validation)
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
    two_step: TwoStep | None = None,
) -> dict[str, Any]:
    """The content of fits.json (with a ``two_step`` section for a task score)."""
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
                primary.objective.column: pred.predicted,
                "interval": [pred.lower, pred.upper],
                "extrapolated": pred.extrapolated,
                "extrapolation_factor": dict(pred.reach),
                "uncertainty": "fit (bootstrap), extrapolation error rate "
                f"{sf.error_rate:.3g} per e-fold of reach, and law disagreement"
                + ("; then the link's bootstrap (step 2)" if two_step is not None else ""),
            }
        )
        if two_step is not None and pred is not None:
            lp = two_step.loss_decisions[0].predictions.get(name)
            sd = float(two_step.link.observation_sd(pred.predicted))
            entry["prediction"]["step1"] = None if lp is None else lp.to_dict()
            entry["prediction"]["observation_sd"] = sd if two_step.link.questions else None
        if sf.pooled.bootstrap is not None:
            entry["param_intervals"] = entry["bootstrap"]["param_intervals"]
        sources[name] = entry
    payload = {
        "schema_version": SCHEMA_VERSION,
        "metric": primary.objective.column,
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
    if two_step is not None:
        tm = two_step.task
        payload["objective"] = primary.objective.to_dict()
        payload["two_step"] = {
            "task": tm.task,
            "score": tm.score,
            "loss": tm.loss,
            "stderr": tm.stderr,
            "chance": two_step.chance,
            "link": two_step.link.to_dict(level),
            "step1_targets": [td.to_dict() for td in two_step.loss_decisions],
            "observation_sd": "binomial sd of one measured score of the link's questions per "
            "cell around the predicted expected accuracy; intervals are of the expected accuracy",
        }
    return payload


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
