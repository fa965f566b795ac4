"""Tune's first-in-first-out trial choice, in time that does not grow with the sweep.

Tune's controller asks its scheduler for a trial to start on every step of its loop, and
`FIFOScheduler` answers by scanning every trial the experiment has ever added (twice when
none is pending, the usual case while every slot is busy). A sweep's driver time therefore
grew with the square of its cells: at 3,000 no-op cells (``benchmarks/sweep_scale.py``)
the scan was 12 s of a 167 s sweep, and at 10,000 it would be most of it. `LiveFIFO` makes
the same choice from the trials not yet terminated, kept in the order Tune added them.
"""

from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler


class LiveFIFO(FIFOScheduler):
    """`FIFOScheduler` over the unfinished trials only: the first pending trial in the order
    added (a requeued trial goes to the back, as Tune moves it), else the first paused one.

    A terminated trial is forgotten when met; an errored one is kept, since Tune may set it
    pending again (a retry) without adding it anew."""

    def __init__(self):
        super().__init__()
        self._unfinished: dict[str, Trial] = {}

    def __getstate__(self) -> dict:
        # pickled with a Tuner for ``--resume``: the restored run adds its own trials
        return {**self.__dict__, "_unfinished": {}}

    def on_trial_add(self, tune_controller, trial: Trial):
        self._unfinished.pop(trial.trial_id, None)
        self._unfinished[trial.trial_id] = trial

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        paused, terminated, chosen = None, [], None
        for trial_id, trial in self._unfinished.items():
            if trial.status == Trial.PENDING:
                chosen = trial
                break
            if trial.status == Trial.PAUSED and paused is None:
                paused = trial
            elif trial.status == Trial.TERMINATED:
                terminated.append(trial_id)
        for trial_id in terminated:
            del self._unfinished[trial_id]
        return chosen or paused

    def debug_string(self) -> str:
        return "Using FIFO scheduling over unfinished trials."
