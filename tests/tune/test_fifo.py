"""`tune.fifo.LiveFIFO` chooses exactly what Tune's `FIFOScheduler` chooses, without
scanning finished trials (real Tune `Trial` objects; the controller is only the list of
trials both schedulers read, kept as Tune keeps it)."""

from __future__ import annotations

import random

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler

from annealscale.tune.fifo import LiveFIFO


class _Trials:
    """The part of Tune's controller a FIFO scheduler reads: its trials, in order."""

    def __init__(self):
        self.trials: list[Trial] = []

    def get_trials(self) -> list[Trial]:
        return self.trials


def _add(controller: _Trials, schedulers, trial: Trial) -> None:
    controller.trials.append(trial)
    for scheduler in schedulers:
        scheduler.on_trial_add(controller, trial)


def _requeue(controller: _Trials, schedulers, trial: Trial) -> None:
    """What Tune does to a trial it retries after a failure: to the back, added again."""
    controller.trials.remove(trial)
    trial.set_status(Trial.PENDING)
    _add(controller, schedulers, trial)


NEXT = {
    # the status changes Tune makes; a terminated trial never runs again in one experiment
    Trial.PENDING: [Trial.RUNNING, Trial.TERMINATED],
    Trial.RUNNING: [Trial.TERMINATED, Trial.PAUSED, Trial.ERROR, "requeue"],
    Trial.PAUSED: [Trial.PENDING, Trial.RUNNING, Trial.TERMINATED],
    Trial.ERROR: [Trial.PENDING, "requeue"],
    Trial.TERMINATED: [],
}


@pytest.mark.parametrize("seed", range(5))
def test_live_fifo_makes_fifos_choice_through_a_random_sweep(seed):
    rng = random.Random(seed)
    controller, fifo, live = _Trials(), FIFOScheduler(), LiveFIFO()
    schedulers = (fifo, live)
    for step in range(2000):
        if rng.random() < 0.25 or not controller.trials:
            _add(controller, schedulers, Trial("noop", stub=True))
        else:
            trial = rng.choice(controller.trials)
            choices = NEXT[trial.status]
            change = rng.choice(choices) if choices else None
            if change == "requeue":
                _requeue(controller, schedulers, trial)
            elif change is not None:
                trial.set_status(change)
        assert live.choose_trial_to_run(controller) is fifo.choose_trial_to_run(controller), step


def test_finished_trials_are_forgotten():
    controller, live = _Trials(), LiveFIFO()
    trials = [Trial("noop", stub=True) for _ in range(1000)]
    for trial in trials:
        _add(controller, [live], trial)
        trial.set_status(Trial.TERMINATED)
    running = Trial("noop", stub=True)
    _add(controller, [live], running)
    running.set_status(Trial.RUNNING)
    assert live.choose_trial_to_run(controller) is None
    assert list(live._unfinished.values()) == [running]  # one pass dropped the 1,000


def test_a_pickled_scheduler_holds_no_trials():
    import pickle

    controller, live = _Trials(), LiveFIFO()
    _add(controller, [live], Trial("noop", stub=True))
    restored = pickle.loads(pickle.dumps(live))
    assert restored.choose_trial_to_run(_Trials()) is None
    assert live.choose_trial_to_run(controller) is controller.trials[0]
