"""Wiring of ``sweep --adaptive``: build the `AdaptiveSearcher` from a sweep's plan and
results store, and write what the stop rule decided and saved (``adaptive.json``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from annealscale.analysis.propose import ProposerSettings
from annealscale.analysis.propose_costs import CandidateCell, PoolReuseCosts
from annealscale.analysis.propose_model import DEFAULT_LAW_PRIOR
from annealscale.analysis.target import Target
from annealscale.tune.plans import CellPlan
from annealscale.tune.results import ResultsStore
from annealscale.tune.searcher import AdaptiveSearcher
from annealscale.tune.spec import ExperimentSpec

STATE_FILE = "adaptive_state.json"
SUMMARY_FILE = "adaptive.json"


def adaptive_target(spec: ExperimentSpec) -> Target:
    """The decision's target from the spec's ``adaptive`` section (default: the largest
    training budget of the grid, each source at its largest spend)."""
    a = spec.adaptive
    if a.target_cost is not None:
        return Target(total_cost=a.target_cost)
    tokens = a.target_tokens if a.target_tokens is not None else max(spec.grid.train_tokens)
    per_step = spec.train.tokens_per_step
    return Target(train_tokens=float(tokens // per_step * per_step), curation_spend=a.target_spend)


def cells_and_costs(
    plans: dict[str, CellPlan], finished: pd.DataFrame
) -> tuple[list[CandidateCell], PoolReuseCosts]:
    """Every cell of the sweep as a candidate (planned now or finished earlier), and the
    cost model from their ledgers: each pool's curation cost once, each cell's training
    cost (FLOPs priced at the spec's prices)."""
    rows = [p.row for p in plans.values()]
    if len(finished):
        rows += [r for r in finished.to_dict("records") if r["cell_id"] not in plans]
    cells, curation, train = [], {}, {}
    for r in rows:
        cell = CandidateCell(
            source=str(r["source"]),
            curation_spend=float(r["curation_spend"]),
            train_tokens=float(r["train_tokens"]),
            unique_tokens=float(r["unique_tokens"]),
            key=str(r["cell_id"]),
        )
        cells.append(cell)
        curation[cell.pool] = float(r["curation_cost"])
        train[cell.name] = float(r["train_cost"])
    tokens = np.array([c.train_tokens for c in cells])
    cost = np.array([train[c.name] for c in cells])
    per_token = float(np.sum(tokens * cost) / np.sum(tokens * tokens))  # only for splits
    return cells, PoolReuseCosts(
        usd_per_train_token=per_token,
        curation=curation,
        train_cost_fn=lambda c: train[c.name],
    )


class SearcherFactory:
    """``run_sweep(search_alg=...)``: builds (or restores) the searcher and keeps it."""

    def __init__(self, spec: ExperimentSpec, out_dir: str | Path):
        self.spec = spec
        self.out_dir = Path(out_dir)
        self.searcher: AdaptiveSearcher | None = None

    def __call__(
        self, *, plans: dict[str, CellPlan], store: ResultsStore, concurrency: int
    ) -> AdaptiveSearcher:
        a = self.spec.adaptive
        table = store.read()
        finished = table[table["status"] == "finished"] if len(table) else table
        cells, costs = cells_and_costs(plans, finished)
        grid_cost = costs.spent(cells)
        state_path = self.out_dir / STATE_FILE
        searcher = AdaptiveSearcher(
            cells=cells,
            costs=costs,
            target=adaptive_target(self.spec),
            finished_rows=finished,
            threshold=a.threshold,
            budget=a.budget_fraction * grid_cost,
            q=a.batch_size or concurrency,
            # The weakly-informative prior on beta and R_star keeps sources sampled by two or
            # three cells from looking certain: without it the demo's adaptive sweep stopped
            # at P(best) 98 % on the wrong source after 7 of 27 cells (README).
            settings=ProposerSettings(law=a.law, law_prior=DEFAULT_LAW_PRIOR),
            state_path=state_path,
        )
        if state_path.exists():
            searcher.restore(str(state_path))
        self.searcher = searcher
        return searcher

    def summary(self) -> dict:
        """What the stop rule decided, written to ``adaptive.json``; None before a run."""
        s = self.searcher
        if s is None:
            return {}
        check = s.check()
        record = s.stop or check.to_dict()
        record = {**record, "final": check.to_dict(), "proposals": s.log}
        path = self.out_dir / SUMMARY_FILE
        path.write_text(json.dumps(record, indent=1, default=_json_default))
        return record


def stop_message(record: dict) -> str:
    """One sentence for the report: why the adaptive sweep stopped, how sure the proposer
    was of its pick then, and what the stop saved.

    The proposer's probability is its posterior's (with the law prior), not the decision
    table's bootstrap P(best); the two differ on few cells, so the sentence names it."""
    final = record.get("final", record)
    rec, conf = record.get("recommended"), record.get("confidence")
    threshold = record.get("threshold", 0.0)
    sure = (
        f"the proposer's posterior probability that {rec} is best was {conf:.0%}"
        if rec is not None and conf is not None
        else None
    )
    reason = record.get("reason")
    if reason == "confident":
        why = f"{sure} (threshold {threshold:.0%}) and every source's held-out check passed"
    elif reason in ("budget", "exhausted"):
        why = "its budget was spent" if reason == "budget" else "every cell had run"
        if sure is not None and conf >= threshold and not record.get("held_out_ok"):
            why += f"; {sure}, but not every source's fit had passed a held-out check"
        elif sure is not None:
            why += f"; {sure}, short of the {threshold:.0%} threshold"
    else:
        why = "the sweep ended before the stop rule fired"
    spent, grid = final.get("spent"), final.get("grid_cost")
    text = f"Adaptive sweep: stopped because {why}."
    if spent is not None and grid:
        text += (
            f" It spent ${spent:,.4g} of the full grid's ${grid:,.4g} "
            f"(saved ${grid - spent:,.4g}, {1 - spent / grid:.0%} of the grid's compute)."
        )
    return text


def _json_default(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)
