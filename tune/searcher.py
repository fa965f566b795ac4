"""A Ray Tune `Searcher` that hands out the adaptive proposer's cells (`analysis.propose`).

It refits after every finished trial, proposes up to ``q`` cells jointly (running cells
fantasised), and stops the sweep (``Searcher.FINISHED``) by the stop rule: the
recommendation's probability reached the threshold and the held-out checks pass, or the
budget is spent, or no candidate is left. Its state (finished rows, failed cells, the
stop record, the proposal log) is written to ``state_path`` after every result and read
back by `restore`, so an interrupted sweep resumes where it stopped: finished cells are
never proposed again, and the next proposals are those the interrupted searcher would
have made.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune.search import Searcher

from annealscale.analysis.propose import Proposer, ProposerSettings, StopCheck, stop_check
from annealscale.analysis.propose_costs import CandidateCell, PoolReuseCosts
from annealscale.analysis.target import Target

log = logging.getLogger(__name__)

ROW_COLUMNS = (
    "source",
    "curation_spend",
    "train_tokens",
    "unique_tokens",
    "domain_tokens",
    "domain_bpb",
)
STATE_VERSION = 1


class AdaptiveSearcher(Searcher):
    """Suggests ``{"cell_id": ...}`` configs chosen by the proposer.

    Parameters
    ----------
    cells : sequence of CandidateCell
        Every cell of the grid (``key`` = the cell identity), finished or not.
    costs : PoolReuseCosts
        Marginal costs of cells (curation once per pool).
    target : Target
    finished_rows : DataFrame, optional
        Rows of cells finished before this searcher started (the results store).
    threshold, budget : float
        Stop rule: decision probability, and USD budget (None: no budget).
    q : int
        Cells proposed jointly.
    state_path : path, optional
        Where the state is saved after every result (and read by `restore`).
    """

    def __init__(
        self,
        *,
        cells: Sequence[CandidateCell],
        costs: PoolReuseCosts,
        target: Target,
        finished_rows: pd.DataFrame | None = None,
        threshold: float = 0.9,
        budget: float | None = None,
        q: int = 2,
        settings: ProposerSettings | None = None,
        state_path: str | os.PathLike[str] | None = None,
    ):
        # No metric for Tune to check: a trial's results arrive in parts (the worker's
        # metrics, then the driver's report; a skipped cell reports neither), so Tune's check
        # that every result holds the metric cannot hold. The searcher merges them instead.
        super().__init__(metric=None, mode=None)
        self._results: dict[str, dict[str, Any]] = {}  # trial id -> its results merged
        self.cells = {c.name: c for c in cells}
        self.costs = costs
        self.target = target
        self.threshold = threshold
        self.budget = budget
        self.q = max(1, int(q))
        self.proposer = Proposer(target=target, costs=costs, settings=settings)
        self.state_path = None if state_path is None else Path(state_path)
        self.rows: list[dict[str, Any]] = []
        if finished_rows is not None and len(finished_rows):
            for rec in finished_rows.to_dict("records"):
                if rec.get("cell_id") in self.cells and rec.get("status", "finished") == "finished":
                    self.rows.append(_row(self.cells[rec["cell_id"]], rec))
        self.failed: set[str] = set()
        self.live: dict[str, str] = {}  # trial id -> cell id
        self.queue: list[str] = []
        self.log: list[dict[str, Any]] = []
        self.stop: dict[str, Any] | None = None
        self.grid_cost = costs.spent(list(self.cells.values()))

    # --- Tune interface ---------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.stop is not None:
            return Searcher.FINISHED if not self.live else None
        if not self.queue:
            if len(self.live) >= self.q:
                return None
            check = self._check()
            if check.stop and check.reason == "budget" and self.live:
                return None  # running cells may still make the decision confident
            if check.stop:
                self._record_stop(check)
                return Searcher.FINISHED if not self.live else None
            self.queue = self.next_cells(self.q - len(self.live))
            if not self.queue:
                return Searcher.FINISHED if not self.live else None
        cell_id = self.queue.pop(0)
        self.live[trial_id] = cell_id
        return {"cell_id": cell_id}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._results.setdefault(trial_id, {}).update(result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        result = {**self._results.pop(trial_id, {}), **(result or {})}
        cell_id = self.live.pop(trial_id, None)
        if cell_id is None:
            return
        if error or not _finite(result.get("domain_bpb")):
            self.failed.add(cell_id)
        else:
            self.rows.append(_row(self.cells[cell_id], result))
        self._save_state()

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))

    def get_state(self) -> dict:
        return {
            "version": STATE_VERSION,
            "rows": self.rows,
            "failed": sorted(self.failed),
            "log": self.log,
            "stop": self.stop,
        }

    def set_state(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"adaptive searcher state version {state.get('version')} is unknown")
        known = {r["cell_id"] for r in self.rows}
        self.rows += [r for r in state["rows"] if r["cell_id"] not in known]
        self.failed = set(state["failed"])
        self.log = list(state["log"])
        self.stop = state["stop"]
        # cells that were running when the state was saved are not done: they may be proposed
        self.live, self.queue = {}, []

    # --- proposer -----------------------------------------------------------------------

    @property
    def done(self) -> list[CandidateCell]:
        return [self.cells[r["cell_id"]] for r in self.rows]

    @property
    def committed(self) -> list[CandidateCell]:
        """Cells whose cost is spent or being spent: finished, failed and running."""
        running = [self.cells[c] for c in self.live.values()]
        failed = [self.cells[c] for c in sorted(self.failed)]
        return [*self.done, *failed, *running]

    @property
    def spent(self) -> float:
        return self.costs.spent(self.committed)

    def affordable(self, cells: Sequence[CandidateCell]) -> list[CandidateCell]:
        """Those of ``cells`` that fit in what is left of the budget: the budget is a cap,
        so a cell that would take the committed cost above it is never started."""
        if self.budget is None:
            return list(cells)
        paid = self.committed
        left = self._left(paid)
        return [c for c in cells if self.costs.marginal_cost(c, paid) <= left]

    def _left(self, paid: Sequence[CandidateCell]) -> float:
        """What is left of the budget after ``paid``, with room for rounding: a cell that
        costs exactly what is left (``budget_fraction`` 1.0) fits."""
        assert self.budget is not None
        return self.budget * (1 + 1e-9) - self.costs.spent(paid)

    def table(self) -> pd.DataFrame:
        if not self.rows:
            return pd.DataFrame(columns=[*ROW_COLUMNS, "cell_id"])
        return pd.DataFrame(self.rows)

    def open_cells(self) -> list[CandidateCell]:
        taken = {r["cell_id"] for r in self.rows} | self.failed | set(self.live.values())
        return [c for name, c in self.cells.items() if name not in taken]

    def next_cells(self, n: int) -> list[str]:
        """Cell ids of the next ``n`` proposals (running cells fantasised)."""
        open_cells = self.affordable(self.open_cells())
        if not open_cells or n < 1:
            return []
        pending = [self.cells[c] for c in self.live.values()]
        proposal = self.proposer.propose(
            self.table(), open_cells, n=n, pending=pending, done=self.done
        )
        cells = list(proposal.cells)
        if self.budget is not None:  # each fits alone; together they must fit too
            paid, cells = self.committed, []
            left = self._left(paid)
            for p in proposal.cells:
                cost = self.costs.marginal_cost(p.cell, paid)
                if cost <= left:
                    cells.append(p)
                    paid.append(p.cell)
                    left -= cost
        self.log.append(
            {
                "n_finished": len(self.rows),
                "spent": self.spent,
                "recommended": proposal.state.recommended,
                "p_best": dict(proposal.state.p_best),
                "proposed": [p.to_dict() for p in cells],
            }
        )
        for p in cells:
            log.info(
                "adaptive: propose %s spend=%g tokens=%d (%s, gain %.3g, cost $%.3g)",
                p.cell.source,
                p.cell.curation_spend,
                p.cell.train_tokens,
                p.reason,
                p.expected_gain,
                p.cost,
            )
        return [p.cell.name for p in cells]

    def check(self) -> StopCheck:
        return self._check()

    def _check(self) -> StopCheck:
        open_cells = self.open_cells()
        return stop_check(
            self.proposer,
            self.table(),
            list(self.cells.values()),
            spent=self.spent,
            threshold=self.threshold,
            budget=self.budget,
            grid_cost=self.grid_cost,
            remaining=len(open_cells),
            affordable=len(self.affordable(open_cells)),
        )

    def _record_stop(self, check: StopCheck) -> None:
        self.stop = check.to_dict()
        log.info("adaptive: %s", check.message())
        self._save_state()

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".{self.state_path.name}.tmp")
        tmp.write_text(json.dumps(self.get_state(), indent=1))
        os.replace(tmp, self.state_path)


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _row(cell: CandidateCell, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The proposer's row for a finished cell: its budget and pool, and the metrics."""
    tokens = float(metrics.get("train_tokens") or cell.train_tokens)
    unique = metrics.get("unique_tokens", cell.unique_tokens)
    domain = metrics.get("domain_tokens")
    return {
        "cell_id": cell.name,
        "source": cell.source,
        "curation_spend": float(cell.curation_spend),
        "train_tokens": tokens,
        "unique_tokens": float(unique) if _finite(unique) else float("nan"),
        "domain_tokens": float(domain) if _finite(domain) else float("nan"),
        "domain_bpb": float(metrics["domain_bpb"]),
    }
