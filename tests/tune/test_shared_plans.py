"""`tune.trial.SharedPlans`: a trial process unpickles a sweep's plans once, for all the
cells it runs, and never serves one sweep's plans for another's (a real local Ray; the
plans are plain picklable stand-ins, as a trial only looks them up by identity)."""

from __future__ import annotations

import pytest

from annealscale.tune.trial import SharedPlans


@pytest.fixture
def trial_process(ray_local):
    """A Ray actor standing for a reused trial process: it looks plans up and says which
    unpickled mapping served them."""
    import ray

    @ray.remote(num_cpus=0)
    class TrialProcess:
        def look_up(self, plans: SharedPlans, identity: str):
            served = SharedPlans._cached[1] if identity in plans else None
            return (plans[identity] if identity in plans else None), id(served)

    process = TrialProcess.remote()
    yield process
    ray.kill(process)


@pytest.mark.timeout(120)
def test_a_process_unpickles_a_sweeps_plans_once_and_never_mixes_sweeps(trial_process):
    import ray

    first = SharedPlans({"a": "plan of a", "b": "plan of b"})
    got_a, served_a = ray.get(trial_process.look_up.remote(first, "a"))
    got_b, served_b = ray.get(trial_process.look_up.remote(first, "b"))
    assert (got_a, got_b) == ("plan of a", "plan of b")
    assert served_a == served_b  # the second cell read the mapping the first unpickled

    second = SharedPlans({"a": "another sweep's plan of a"})
    got, served = ray.get(trial_process.look_up.remote(second, "a"))
    assert got == "another sweep's plan of a"
    assert ray.get(trial_process.look_up.remote(second, "b"))[0] is None
    assert ray.get(trial_process.look_up.remote(first, "b"))[0] == "plan of b"
