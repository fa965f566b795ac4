"""Placement groups of a dead creator actor are freed; no other group is touched (a real
local Ray, which like every local instance runs without the dashboard that Ray Train's own
cleaner needs)."""

from __future__ import annotations

import time

import pytest

from annealscale.tune.orphans import (
    OrphanedPlacementGroups,
    orphaned_placement_groups,
    remove_orphaned_placement_groups,
)


@pytest.fixture
def groups(ray_local):
    """A group made by this driver, one by a live actor and one by an actor then killed
    (as a Train controller dies with its SIGKILLed trial process)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    @ray.remote(num_cpus=0)
    class Controller:
        def reserve(self):
            group = placement_group([{"CPU": 0.5}])
            ray.get(group.ready())
            return group.id.hex()

    driver_group = placement_group([{"CPU": 0.5}])
    ray.get(driver_group.ready())
    alive, doomed = Controller.remote(), Controller.remote()
    alive_group = ray.get(alive.reserve.remote())
    doomed_group = ray.get(doomed.reserve.remote())
    ray.kill(doomed)
    yield {"driver": driver_group.id.hex(), "alive": alive_group, "orphan": doomed_group}
    ray.kill(alive)
    remove_placement_group(driver_group)
    remove_orphaned_placement_groups(ray.get_runtime_context().get_job_id())


def _state(group_id: str) -> str:
    import ray
    from ray.util.placement_group import PlacementGroup

    group = PlacementGroup(ray.PlacementGroupID.from_hex(group_id))
    return ray.util.placement_group_table(group)["state"]


def _wait_orphaned(job_id: str, group_id: str) -> list[str]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        orphans = orphaned_placement_groups(job_id)
        if group_id in orphans:
            return orphans
        time.sleep(0.1)
    return orphaned_placement_groups(job_id)


@pytest.mark.timeout(120)
def test_only_the_dead_actors_group_is_orphaned_and_removing_it_frees_it(groups):
    import ray

    job_id = ray.get_runtime_context().get_job_id()
    orphans = _wait_orphaned(job_id, groups["orphan"])
    assert groups["orphan"] in orphans
    assert groups["driver"] not in orphans and groups["alive"] not in orphans
    assert _state(groups["orphan"]) == "CREATED"  # Ray itself keeps it until the job ends

    assert remove_orphaned_placement_groups(job_id) >= 1
    assert _state(groups["orphan"]) == "REMOVED"
    assert _state(groups["driver"]) == "CREATED" and _state(groups["alive"]) == "CREATED"
    assert groups["orphan"] not in orphaned_placement_groups(job_id)


@pytest.mark.timeout(120)
def test_the_sweeps_callback_frees_them_at_most_every_few_seconds(groups):
    import ray

    _wait_orphaned(ray.get_runtime_context().get_job_id(), groups["orphan"])
    callback = OrphanedPlacementGroups(every_s=3600)
    callback.on_step_end(iteration=0, trials=[])
    assert _state(groups["orphan"]) == "REMOVED"
    assert _state(groups["alive"]) == "CREATED"
