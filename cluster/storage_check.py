"""Multi-node sweeps need a ``storage_path`` that every node reaches.

Ray Tune and Ray Train write trial state and checkpoints under the storage path from
whichever node runs the trial, and the curated pools prepared by the driver are read by
workers on other nodes. A node-local path on a multi-node cluster fails late and
confusingly (a trial on another node finds no pool, a restored trial finds no checkpoint),
so the sweep checks first: the driver writes a marker under the path and a task pinned to
each alive node reads it back.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from annealscale.core.errors import AnnealscaleError

READ_TIMEOUT_S = 120.0
"""A node that cannot start a task this long is reported as unable to read the path."""


def is_local_path(storage_path: str) -> bool:
    """A filesystem path (``/mnt/x``, ``runs/x``) rather than a URI (``s3://``, ``gs://``)."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", storage_path) is None


def needs_check(storage_path: str, node_count: int) -> bool:
    """Only local paths on clusters of several nodes can be invisible to some node."""
    return node_count > 1 and is_local_path(storage_path)


def storage_problem(storage_path: str, seen_by_node: dict[str, bool]) -> str | None:
    """The one-line error for nodes that cannot read what the driver wrote, or None."""
    blind = sorted(node for node, seen in seen_by_node.items() if not seen)
    if not blind:
        return None
    return (
        f"storage_path {storage_path}: not visible from {len(blind)} of {len(seen_by_node)} "
        f"Ray nodes ({', '.join(blind)}); a multi-node sweep needs storage every node "
        "reaches: mount shared storage (NFS, EFS, Filestore) at the same path on every node "
        "and set storage_path to it"
    )


def nodes_seeing(marker: Path, content: str, node_ids: list[str]) -> dict[str, bool]:
    """For each node id, whether a task pinned to that node reads ``content`` at ``marker``."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, max_retries=0)
    def reads(path: str, expected: str) -> bool:
        try:
            return Path(path).read_text() == expected
        except OSError:
            return False

    refs = {
        node: reads.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
        ).remote(str(marker), content)
        for node in node_ids
    }
    seen = {}
    for node, ref in refs.items():
        try:
            seen[node] = bool(ray.get(ref, timeout=READ_TIMEOUT_S))
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError):
            seen[node] = False
    return seen


def check_shared_storage(storage_path: str) -> None:
    """Raise `AnnealscaleError` if some alive node of the connected cluster cannot read
    ``storage_path``; a no-op on one node or for object-store URIs."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if not needs_check(storage_path, len(nodes)):
        return
    root = Path(storage_path).resolve()
    root.mkdir(parents=True, exist_ok=True)
    content = uuid.uuid4().hex
    marker = root / f".annealscale-visible-{content[:12]}"
    marker.write_text(content)
    try:
        seen = nodes_seeing(marker, content, [n["NodeID"] for n in nodes])
    finally:
        marker.unlink(missing_ok=True)
    addresses = {n["NodeID"]: f"{n['NodeManagerAddress']} {n['NodeID'][:8]}" for n in nodes}
    problem = storage_problem(str(root), {addresses[k]: v for k, v in seen.items()})
    if problem:
        raise AnnealscaleError(problem)
