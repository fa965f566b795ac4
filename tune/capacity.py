"""Refuse at start a sweep whose cells the cluster can never schedule.

Ray would otherwise leave such a trial pending forever with no word (a worker asking for
64 CPUs on a 4-CPU machine). A cell needs its driver bundle (`tune.trial.DRIVER_CPUS` plus
``resources.driver_resources``) and ``num_workers`` worker bundles (``cpus_per_worker``,
``gpus_per_worker``). Each bundle must fit on one node; on a fixed cluster the workers must
also fit across the live nodes at once. An autoscaling cluster can add nodes: there a bundle
may fit a node type of the autoscaler config instead (the cluster launcher's
``~/ray_bootstrap_config.yaml`` on the head node, or the file named by
``ANNEALSCALE_AUTOSCALER_CONFIG``), and the worker count is not bounded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from annealscale.core.errors import AnnealscaleError

AUTOSCALER_CONFIGS = ("~/ray_bootstrap_config.yaml",)


def worker_bundle(resources) -> dict[str, float]:
    bundle = {"CPU": float(resources.cpus_per_worker)}
    if resources.gpus_per_worker:
        bundle["GPU"] = float(resources.gpus_per_worker)
    return bundle


def driver_bundle(resources, driver_cpus: float) -> dict[str, float]:
    return {
        "CPU": float(driver_cpus),
        **{k: float(v) for k, v in resources.driver_resources.items()},
    }


def _fits(bundle: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(float(node.get(k, 0.0)) + 1e-9 >= v for k, v in bundle.items() if v > 0)


def _count(bundle: Mapping[str, float], node: Mapping[str, float]) -> int:
    return min(
        (math.floor(float(node.get(k, 0.0)) / v + 1e-9) for k, v in bundle.items() if v > 0),
        default=0,
    )


def _show(node: Mapping[str, float], keys: Sequence[str]) -> str:
    return "{" + ", ".join(f"{k}: {float(node.get(k, 0.0)):g}" for k in keys) + "}"


def unschedulable(
    resources,
    driver_cpus: float,
    nodes: Sequence[Mapping[str, float]],
    node_types: Mapping[str, Mapping[str, float]] | None = None,
) -> str | None:
    """Why a cell of ``resources`` can never run on ``nodes`` (the live nodes' total
    resources) or the autoscaler's ``node_types``; None when it can."""
    worker, driver = worker_bundle(resources), driver_bundle(resources, driver_cpus)
    keys = list(dict.fromkeys([*worker, *driver]))
    shapes = [*nodes, *(node_types or {}).values()]
    asks = (
        f"a cell asks for {resources.num_workers} worker(s) x {_show(worker, list(worker))} "
        f"plus a driver {_show(driver, list(driver))}"
    )
    if node_types:
        offer = "the autoscaler's node types offer " + ", ".join(
            f"{name} {_show(shape, keys)}" for name, shape in node_types.items()
        )
    else:
        largest = max(nodes, key=lambda n: tuple(float(n.get(k, 0.0)) for k in keys), default={})
        offer = f"the largest of {len(nodes)} node(s) has {_show(largest, keys)}"
    fix = (
        "lower resources.cpus_per_worker / gpus_per_worker / num_workers / "
        "driver_resources in the spec, or run on a cluster with larger nodes"
    )
    for what, bundle in (("worker", worker), ("driver", driver)):
        if not any(_fits(bundle, shape) for shape in shapes):
            return f"resources: no node can hold one {what}: {asks}; {offer}; {fix}"
    if not node_types:
        room = sum(_count(worker, n) for n in nodes)
        if room < resources.num_workers:
            return (
                f"resources: the cluster holds only {room} of the {resources.num_workers} "
                f"workers at once: {asks}; {offer}; {fix}"
            )
    return None


def autoscaler_node_types() -> dict[str, dict[str, float]] | None:
    """Node types (name: resources) of the autoscaler config on this machine, if any."""
    import yaml

    named = os.environ.get("ANNEALSCALE_AUTOSCALER_CONFIG")
    for candidate in ([named] if named else []) + list(AUTOSCALER_CONFIGS):
        path = Path(candidate).expanduser()
        if not path.is_file():
            continue
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        types = config.get("available_node_types") or {}
        out = {
            str(name): {k: float(v) for k, v in (body or {}).get("resources", {}).items()}
            for name, body in types.items()
            if (body or {}).get("max_workers", 1) or name == config.get("head_node_type")
        }
        if out:
            return out
    return None


def check_capacity(resources, driver_cpus: float) -> None:
    """Raise `AnnealscaleError` (one line: what a cell asks, what the cluster has) when the
    connected Ray cluster can never schedule a cell of ``resources``."""
    import ray

    if not ray.is_initialized():
        return  # Tune will start a local Ray sized to this machine; the CLI connects first
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    problem = unschedulable(resources, driver_cpus, nodes, autoscaler_node_types())
    if problem:
        raise AnnealscaleError(problem)
