"""Cells reach Ray Tune only once this sweep holds their claim (`tune.claims`).

Tune reserves a trial's resources before the trial's function runs; for a warm
single-worker cell (`tune.warm`) that is the worker's own CPUs or GPU. A trial that waited
inside for another sweep's claim would hold a worker slot while idle, and two sweeps of one
spec on one cluster starved each other (and Ray Data's reads) that way. So the sweep driver
claims a cell when Tune asks for the next trial, before any resources are reserved:

- a cell nobody else holds is claimed and handed out;
- a cell another live sweep holds is set aside and the next cell is asked for, so each sweep
  works first on cells nobody claimed and waits only at its end, holding nothing;
- a set-aside cell is handed out once its claim is ours (the other sweep died: stale
  takeover) or it has a finished row (its trial then reports it skipped, training nothing).

One path for the grid (`CellQueue`) and the adaptive searcher: `ClaimingSearcher` wraps
whichever chooses the cells. A restored Tune experiment (``--resume``) unpickles its
searcher with the interrupted run's claim owner; such a restored searcher hands out no new
cell (the sweep's fresh searcher, under this run's owner, runs the cells still missing).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from ray.tune.search import Searcher

log = logging.getLogger(__name__)


def longest_first(cell_ids: Sequence[str], rows: dict[str, dict]) -> list[str]:
    """``cell_ids`` by planned compute (training plus evaluation FLOPs), largest first;
    equal cells keep their order. Run in this order a sweep's tail is short cells filling
    the last slots, not one long cell running alone (the full demo's last 18 s were one
    cell on an idle second slot)."""
    return sorted(
        cell_ids, key=lambda i: rows[i]["train_flops"] + rows[i]["eval_flops"], reverse=True
    )


class CellQueue(Searcher):
    """The grid: ``{"cell_id": ...}`` for each of ``cell_ids`` in order, then finished."""

    def __init__(self, cell_ids: Sequence[str]):
        super().__init__(metric=None, mode=None)
        self._todo = list(cell_ids)

    def suggest(self, trial_id: str) -> dict | str:
        return {"cell_id": self._todo.pop(0)} if self._todo else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        # nothing to restore: a resumed sweep runs the cells still missing afresh
        Path(checkpoint_path).write_text(json.dumps({"todo": self._todo}))

    def restore(self, checkpoint_path: str) -> None:
        pass


class ClaimingSearcher(Searcher):
    """Hands out the cells ``inner`` suggests, each only once ``claims`` holds it for this
    sweep or ``store`` has it finished.

    Parameters
    ----------
    inner : Searcher
        Suggests ``{"cell_id": ...}`` configs (`CellQueue`, or the adaptive searcher).
    claims : tune.claims.Claims
        This sweep run's claims (the driver's owner).
    store : tune.results.ResultsStore
    stopping : callable, optional
        True once the sweep is being interrupted: no cell is handed out after that, and
        Tune, which polls an empty searcher for up to 10 minutes, is not kept waiting.
    """

    def __init__(self, inner: Searcher, claims, store, stopping: Callable[[], bool] | None = None):
        super().__init__(metric=None, mode=None)
        self.inner = inner
        self.claims = claims
        self.store = store
        self._stopping = stopping
        self._restored = False
        self._inner_finished = False
        self._waiting: dict[str, dict] = {}  # inner's trial id -> its config, claimed elsewhere
        self._inner_id: dict[str, str] = {}  # Tune's trial id -> the id inner suggested it for
        self._cell_of: dict[str, str] = {}  # Tune's trial id -> the cell handed out to it
        self._announced: set[str] = set()

    def __getstate__(self) -> dict:
        # Pickled into Tune's experiment state: the copy a restore unpickles must not claim
        # under this run's owner, and the stop check is this process's alone.
        return {**self.__dict__, "_stopping": None, "_restored": True}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"_cell_of": {}, **state})  # a state pickled before it existed

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | str | None:
        if self._restored or (self._stopping is not None and self._stopping()):
            return Searcher.FINISHED
        for inner_id, config in list(self._waiting.items()):
            if self._take(config["cell_id"]):
                del self._waiting[inner_id]
                self._inner_id[trial_id] = inner_id
                self._cell_of[trial_id] = config["cell_id"]
                return config
        while not self._inner_finished:
            config = self.inner.suggest(trial_id)
            if config == Searcher.FINISHED:
                self._inner_finished = True
            elif config is None:
                return None
            elif self._take(config["cell_id"]):
                self._inner_id[trial_id] = trial_id
                self._cell_of[trial_id] = config["cell_id"]
                return config
            else:
                self._waiting[trial_id] = config
                self._announce(config["cell_id"])
                return None  # Tune asks again, with a new trial id, for the next cell
        return None if self._waiting else Searcher.FINISHED

    def _take(self, identity: str) -> bool:
        return self.store.has_finished(identity) or self.claims.acquire(identity)

    def _announce(self, identity: str) -> None:
        if identity in self._announced:
            return
        self._announced.add(identity)
        holder = self.claims.holder(identity) or {}
        log.info(
            "cell %s: being trained by another sweep (%s, pid %s); this sweep runs its other "
            "cells first and takes it up when that sweep has finished it",
            identity,
            holder.get("host"),
            holder.get("pid"),
        )

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.inner.on_trial_result(self._inner_id.get(trial_id, trial_id), result)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        from annealscale.tune.trial import SKIPPED

        inner_id = self._inner_id.pop(trial_id, trial_id)
        identity = self._cell_of.pop(trial_id, None)
        if not error and identity is not None and SKIPPED in (result or {}):
            # Another sweep finished the cell while this one waited for its claim: the
            # inner searcher is told that row, as if this trial had trained it (an adaptive
            # searcher would otherwise count a finished cell as failed).
            finished = self.store.read({identity})
            if not finished.empty and (finished["status"] == "finished").all():
                result = {**finished.iloc[0].to_dict(), **result}
        self.inner.on_trial_complete(inner_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)
