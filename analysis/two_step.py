"""Two-step laws for benchmark metrics: a task's accuracy at the target, predicted through
the source's law for the task's loss (step 1) and the task's link from loss to accuracy
(step 2).

Columns follow the results table's convention: ``task/<task>/<metric>`` (e.g.
``task/mathqa_local/acc``), its ``task/<task>/<metric>_stderr``, and the task's loss
``task/<task>/bpb`` (mean bits per byte of the correct continuation). Step 1 fits,
validates and bootstraps ``task/<task>/bpb`` exactly as ``domain_bpb``; step 2 is one
`analysis.link.LinkFit` per task, shared by its sources. A source's draws of the accuracy
are its step-1 draws of the loss mapped through the link's draw of the same index, so
every source sees the same link in a draw (P(best) compares sources, not links) and the
link's uncertainty reaches every interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from annealscale.analysis.compare import TargetDecision
from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.link import LinkFit, fit_link, questions_from_stderr
from annealscale.analysis.objective import BPB, Objective
from annealscale.analysis.sources import GroupFit, PoolModel, SourceFits, source_seed

TASK_PREFIX = "task/"
LOSS_METRIC = "bpb"


@dataclass(frozen=True, kw_only=True)
class TaskMetric:
    """What ``--metric task/<task>/<metric>`` names in the results table."""

    task: str
    metric: str
    loss: str
    """Column of the task's loss (step 1's fitted metric)."""
    score: str | None
    """Column of the decided score (step 2); None when the metric is the loss itself."""
    stderr: str | None
    """Column of the score's stderr, when the table has it (binomial weights)."""

    @property
    def loss_objective(self) -> Objective:
        return Objective(column=self.loss, label=f"{self.task} bpb", unit="bpb")

    @property
    def objective(self) -> Objective:
        """What the decision ranks: the score, higher is better (the loss when no score)."""
        if self.score is None:
            return self.loss_objective
        return Objective(
            column=self.score, label=f"{self.task} {self.metric}", unit="", higher_is_better=True
        )


def available_metrics(columns: Iterable[str]) -> list[str]:
    """Metrics ``--metric`` can name in a table with these columns."""
    cols = [str(c) for c in columns]
    tasks = sorted(c for c in cols if c.startswith(TASK_PREFIX) and not c.endswith("_stderr"))
    return [*(["domain_bpb"] if "domain_bpb" in cols else []), *tasks]


def resolve_metric(metric: str, columns: Iterable[str]) -> TaskMetric | None:
    """The task columns ``metric`` names, or None for ``domain_bpb``.

    Raises
    ------
    AnalysisError
        For a name that is not a column of the table, a name not of the form
        ``task/<task>/<metric>``, or a task score whose ``task/<task>/bpb`` is absent.
    """
    cols = [str(c) for c in columns]
    have = ", ".join(available_metrics(cols)) or "none"
    if metric == "domain_bpb":
        return None
    parts = metric.split("/")
    if len(parts) != 3 or parts[0] + "/" != TASK_PREFIX or not parts[1] or not parts[2]:
        raise AnalysisError(
            f"--metric {metric!r} is not domain_bpb or task/<task>/<metric>; available: {have}"
        )
    if metric not in cols:
        raise AnalysisError(
            f"--metric {metric!r} is not a column of the results table; available: {have}"
        )
    task, name = parts[1], parts[2]
    loss = f"{TASK_PREFIX}{task}/{LOSS_METRIC}"
    if name == LOSS_METRIC:
        return TaskMetric(task=task, metric=name, loss=loss, score=None, stderr=None)
    if loss not in cols:
        raise AnalysisError(
            f"--metric {metric!r} needs the task's loss column {loss!r} for the first step, "
            f"which the results table lacks; available: {have}"
        )
    stderr = f"{metric}_stderr"
    return TaskMetric(
        task=task, metric=name, loss=loss, score=metric, stderr=stderr if stderr in cols else None
    )


def fit_task_link(
    rows: pd.DataFrame,
    tm: TaskMetric,
    *,
    chance: float | None,
    n_boot: int,
    seed: int,
) -> LinkFit:
    """Step 2: the link of the task, fitted to every finished row (each seed its own
    measurement) of every source."""
    assert tm.score is not None
    ok = rows[[tm.loss, tm.score]].notna().all(axis=1)
    sel = rows.loc[ok]
    questions = None
    if tm.stderr is not None:
        questions = questions_from_stderr(sel[tm.score], sel[tm.stderr])
    try:
        return fit_link(
            sel[tm.loss].to_numpy(float),
            sel[tm.score].to_numpy(float),
            questions=questions,
            chance=chance,
            n_boot=n_boot,
            seed=seed,
        )
    except AnalysisError as exc:
        raise AnalysisError(f"{tm.score}: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class LinkedFits:
    """A source's step-1 fits (the task loss) seen through the task's link: it answers
    what `analysis.compare.decide_target` asks of a `SourceFits`, in accuracy."""

    loss: SourceFits
    link: LinkFit
    seed: int = 0

    @property
    def source(self) -> str:
        return self.loss.source

    @property
    def pooled(self) -> GroupFit:
        return self.loss.pooled

    @property
    def per_spend(self) -> tuple[GroupFit, ...]:
        return self.loss.per_spend

    @property
    def pool(self) -> PoolModel:
        return self.loss.pool

    @property
    def law(self):  # noqa: ANN201 - the step-1 law
        return self.loss.law

    def predict(self, train_tokens: ArrayLike, spend: ArrayLike) -> np.ndarray:
        """Point accuracy: the link at the law's point prediction of the loss."""
        return self.link.predict(self.loss.predict(train_tokens, spend))

    def draws(self, train_tokens: ArrayLike, spend: ArrayLike) -> np.ndarray:
        """Draws ``(B, n)`` of the expected accuracy through both steps."""
        return self.link.draw_values(self.loss.draws(train_tokens, spend), seed=self.seed)

    def reach(self, train_tokens: ArrayLike, spend: ArrayLike) -> dict[str, np.ndarray]:
        return self.loss.reach(train_tokens, spend)

    def log_reach(self, train_tokens: ArrayLike, spend: ArrayLike) -> np.ndarray:
        return self.loss.log_reach(train_tokens, spend)

    def extrapolated(self, train_tokens: float, spend: float) -> bool:
        return self.loss.extrapolated(train_tokens, spend)

    def uses_spend(self) -> bool:
        return self.loss.uses_spend()


def link_sources(fits: Mapping[str, SourceFits], link: LinkFit, seed: int) -> dict[str, LinkedFits]:
    """Every source's step-1 fits through the shared link (an own noise stream per source)."""
    return {
        s: LinkedFits(loss=sf, link=link, seed=source_seed(seed + 29, s)) for s, sf in fits.items()
    }


@dataclass(frozen=True, kw_only=True)
class TwoStep:
    """What a two-step analysis adds to `analysis.report.Analysis`."""

    task: TaskMetric
    link: LinkFit
    loss_decisions: tuple[TargetDecision, ...]
    """Step 1: the decision on the task loss at each target (the accuracy decision is
    `Analysis.decision`)."""
    chance: float | None

    def sentence(self) -> str:
        """The headline's account of the two steps at the primary target."""
        td = self.loss_decisions[0]
        link = self.link
        preds = "; ".join(
            f"{s} {p.predicted:.4f} ({p.lower:.4f}-{p.upper:.4f})"
            for s, p in sorted(td.predictions.items(), key=lambda kv: kv[1].predicted)
        )
        floor = "chance" if link.floor_fixed else "fitted floor"
        return (
            f"Two steps: the laws of {self.task.task} bpb predict, at {td.target.label}, "
            f"{preds} bpb ({td.level:.0%} intervals); the task's link, shared by the sources "
            f"and fitted on {link.n_cells} cells, maps them to {self.task.metric} between its "
            f"{floor} {link.floor:.3f} and ceiling {link.ceiling:.3f}."
        )

    def notes(self) -> list[str]:
        out = []
        lo = self.link.loss_range[0]
        below = sorted(s for s, p in self.loss_decisions[0].predictions.items() if p.predicted < lo)
        if below:
            out.append(
                f"the predicted {self.task.task} bpb of {', '.join(below)} at the target lies "
                f"below the lowest observed ({lo:.4f}): the link extrapolates there, on the "
                "sigmoid's shape and its bootstrap"
            )
        if self.link.questions is None:
            out.append(
                f"no {self.task.score}_stderr column: the link weighs cells equally and "
                "cannot separate binomial noise from scatter about the link"
            )
        return out


__all__ = [
    "BPB",
    "LinkedFits",
    "TaskMetric",
    "TwoStep",
    "available_metrics",
    "fit_task_link",
    "link_sources",
    "resolve_metric",
]
