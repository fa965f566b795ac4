"""The live view of a running sweep: cells done, running and failed, tokens trained,
compute spent against the sweep's budget, and an ETA.

`SweepProgress` holds the counts and renders one line; `ProgressCallback` feeds it from
Ray Tune's trial events and logs the line every ``progress_seconds`` and whenever a cell
ends. Lines go to the ``annealscale.progress`` logger at INFO, so ``--quiet`` (warnings
only, for CI) silences them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ray import tune

from annealscale.core.units import pflops

log = logging.getLogger("annealscale.progress")


@dataclass
class SweepProgress:
    """Counts of one sweep run; ``budget_flops`` and ``budget_usd`` cover the cells it runs."""

    total: int
    """Cells this run has to run."""
    budget_flops: float
    """Training plus evaluation FLOPs of those cells, as planned."""
    budget_usd: float
    """Their planned total cost (USD): training per cell, curation once per pool
    (`planned_usd`)."""
    concurrency: int
    started: float = field(default_factory=time.time)
    running: set[str] = field(default_factory=set)
    finished: int = 0
    failed: int = 0
    tokens: int = 0
    flops: float = 0.0
    usd: float = 0.0
    cell_seconds: list[float] = field(default_factory=list)
    eta_is_bound: bool = False
    """An adaptive sweep may stop before ``total`` cells: its ETA is then an upper bound."""

    def as_adaptive(self, budget_left_usd: float | None) -> None:
        """An adaptive sweep runs at most ``total`` cells and spends at most what is left of
        its budget: show that cap, and the ETA as a bound."""
        self.eta_is_bound = True
        if budget_left_usd is not None:
            self.budget_usd = min(self.budget_usd, max(budget_left_usd, 0.0))

    def start(self, identity: str) -> None:
        self.running.add(identity)

    def end(self, identity: str, *, ok: bool, tokens: int, flops: float, usd: float, seconds):
        self.running.discard(identity)
        if ok:
            self.finished += 1
            self.tokens += tokens
            self.flops += flops
            self.usd += usd
        else:
            self.failed += 1
        self.cell_seconds.append(seconds)

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Remaining cells at the mean measured cell time, ``concurrency`` at a time."""
        remaining = self.total - self.finished - self.failed
        if remaining == 0:
            return 0.0
        if not self.cell_seconds:
            return None
        mean = sum(self.cell_seconds) / len(self.cell_seconds)
        waves = -(-remaining // max(1, self.concurrency))
        return waves * mean

    def line(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        eta = self.eta_seconds(now)
        share = self.flops / self.budget_flops if self.budget_flops else 0.0
        return (
            f"progress: {self.finished}/{self.total} done, {len(self.running)} running, "
            f"{self.failed} failed; {self.tokens:,} tokens trained; compute "
            f"{pflops(self.flops):.3g}/{pflops(self.budget_flops):.3g} PFLOP ({share:.0%}), "
            f"{self.usd:.2f}/{self.budget_usd:.2f} USD; "
            f"{now - self.started:.0f} s elapsed, ETA "
            + (
                "unknown"
                if eta is None
                else ("at most " if self.eta_is_bound else "") + f"{eta:.0f} s"
            )
        )


def pool_of(row: dict) -> tuple[str, float]:
    """The curated pool a planned cell trains on: its curation is paid once per pool."""
    return str(row.get("source_identity", row.get("source", ""))), float(row["curation_spend"])


def planned_usd(rows: Iterable[dict], paid_pools: set[tuple[str, float]] | None = None) -> float:
    """What running ``rows`` costs: each cell's training, and the curation of each pool not
    in ``paid_pools`` once (a row's ``total_cost`` holds its pool's whole curation cost,
    shared by its siblings). ``paid_pools`` is extended in place."""
    pools = set() if paid_pools is None else paid_pools
    total = 0.0
    for row in rows:
        total += float(row["train_cost"])
        if pool_of(row) not in pools:
            pools.add(pool_of(row))
            total += float(row["total_cost"]) - float(row["train_cost"])
    return total


class ProgressCallback(tune.Callback):
    """Feeds `SweepProgress` from trial events; see the module docstring."""

    def __init__(
        self,
        progress: SweepProgress,
        planned: dict[str, dict],
        every_seconds: float,
        paid_pools: set[tuple[str, float]] | None = None,
    ):
        """``paid_pools``: pools whose curation is already counted (cells finished by an
        earlier run, or another callback of this run); shared, and extended in place."""
        self.progress = progress
        self._planned = planned
        self._every = every_seconds
        self._last = 0.0
        self._started_at: dict[str, float] = {}
        self._tokens: dict[str, int] = {}
        self._paid_pools = set() if paid_pools is None else paid_pools

    def on_trial_start(self, iteration, trials, trial, **info):
        identity = trial.config["cell_id"]
        self._started_at.setdefault(identity, time.time())
        self._tokens[trial.trial_id] = 0
        self.progress.start(identity)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "train_tokens" in result:
            self._tokens[trial.trial_id] = int(result["train_tokens"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        from annealscale.tune.trial import DEFERRED, SKIPPED

        if DEFERRED in (trial.last_result or {}):  # runs later in this sweep
            self.progress.running.discard(trial.config["cell_id"])
            return
        if SKIPPED in (trial.last_result or {}):
            self.progress.running.discard(trial.config["cell_id"])
            self.progress.total -= 1
            return
        self._end(trial, ok=self._tokens.get(trial.trial_id, 0) > 0)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, ok=False)

    def _end(self, trial, *, ok: bool):
        identity = trial.config["cell_id"]
        row = self._planned.get(identity, {})
        usd = planned_usd([row], self._paid_pools) if ok and row else 0.0
        self.progress.end(
            identity,
            ok=ok,
            tokens=self._tokens.pop(trial.trial_id, 0) if ok else 0,
            flops=float(row.get("train_flops", 0.0) + row.get("eval_flops", 0.0)),
            usd=float(usd),
            seconds=time.time() - self._started_at.get(identity, time.time()),
        )
        log.info(self.progress.line())
        self._last = time.time()

    def on_step_end(self, iteration, trials, **info):
        if time.time() - self._last >= self._every:
            self._last = time.time()
            log.info(self.progress.line())
