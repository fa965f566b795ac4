"""Placement groups left behind by a dead Ray Train controller, given back by the sweep.

A multi-worker cell's Train workers are reserved in a placement group that Ray Train's
controller creates; the controller runs under the cell's Tune trial process. A placement
group that is not detached lives as long as its *job*, not its creator actor, so when the
trial process dies (SIGKILL, out of memory) the group keeps its CPUs and GPUs until the
sweep ends. Ray Train's own ``PlacementGroupCleaner`` frees it through the state API,
which needs the dashboard; a local instance runs without one (and a cluster without
``ray[default]`` has none), so the retried trial's new worker group would wait for those
resources for ever. The sweep's driver therefore frees them itself: every few seconds it
removes this job's placement groups whose creating actor is dead, which nothing can still
use (the actors placed in them died with their owner).
"""

from __future__ import annotations

import logging
import time

from ray import tune

log = logging.getLogger(__name__)

LIVE_STATES = ("PENDING", "PREPARED", "CREATED", "RESCHEDULING")
"""Placement group states that hold, or wait for, resources."""


def orphaned_placement_groups(job_id: str) -> list[str]:
    """Ids (hex) of job ``job_id``'s live placement groups whose creating actor is dead.

    Groups created by a driver (no creator actor) and detached groups are never orphans.
    Reads the GCS's placement group table directly: the public
    ``ray.util.placement_group_table`` leaves out who created a group."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    table = gcs_pb2.PlacementGroupTableData
    orphans = []
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        group = table.FromString(raw)
        if (
            group.creator_job_id.hex() == job_id
            and not group.is_detached
            and group.creator_actor_dead
            and not ray.ActorID(group.creator_actor_id).is_nil()  # nil: made by the driver
            and table.PlacementGroupState.Name(group.state) in LIVE_STATES
        ):
            orphans.append(group.placement_group_id.hex())
    return orphans


def remove_orphaned_placement_groups(job_id: str) -> int:
    """Remove job ``job_id``'s orphaned placement groups; return how many."""
    import ray
    from ray.util.placement_group import PlacementGroup

    orphans = orphaned_placement_groups(job_id)
    for group_id in orphans:
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group_id)))
    return len(orphans)


class OrphanedPlacementGroups(tune.Callback):
    """Frees orphaned placement groups of the sweep's job at most every ``every_s``
    seconds while Tune runs. If Ray's internals change so that the table cannot be read,
    it warns once and stops (Ray Train's own cleaner still runs where a dashboard does)."""

    def __init__(self, every_s: float = 2.0):
        import ray

        self._job_id = ray.get_runtime_context().get_job_id()
        self._every_s = every_s
        self._next = 0.0
        self._enabled = True

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if not self._enabled or now < self._next:
            return
        self._next = now + self._every_s
        try:
            removed = remove_orphaned_placement_groups(self._job_id)
        except Exception as err:  # noqa: BLE001 - a Ray internal moved; never fail the sweep
            self._enabled = False
            log.warning("cannot check for orphaned placement groups (%s); not checking again", err)
            return
        if removed:
            log.warning(
                "freed %d placement group(s) left by a Train run whose trial process died",
                removed,
            )
