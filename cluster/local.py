"""Connecting to Ray: an embedded local instance by default, an existing cluster by address."""

from __future__ import annotations

import logging
import os

from anneal.errors import AnnealscaleError

log = logging.getLogger(__name__)


PRELOAD_MODULES = ("torch", "deepspeed", "transformers")
"""What every anneal's worker imports; see `connect`'s ``preload_worker_modules``."""


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    preload_worker_modules: bool = False,
) -> dict:
    """Initialise Ray once; return the cluster's resources.

    Locally, Ray is started in-process on loopback with twice as many logical CPUs as
    cores: each anneal's driver and Ray Data's streaming tasks mostly wait, and reserving a
    whole core for them would leave a 2-core laptop able to run one anneal at a time.
    Token authentication is left to the cluster; the local instance runs without it.

    ``preload_worker_modules`` starts the local instance's worker processes with
    `PRELOAD_MODULES` already imported (Ray's ``preload_python_modules``), so an anneal's
    workers, taken from the pool of idle processes, skip those imports
    (``benchmarks/sweep_overhead.py`` measures the effect). A remote cluster sets this
    when it is started.
    """
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, TimeoutError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise AnnealscaleError(
                f"--address {address}: cannot connect to a Ray cluster ({first}); check the "
                "address and that the cluster is up, or unset RAY_ADDRESS to run locally"
            ) from None
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        cores = os.cpu_count() or 1
        system_config = {}
        if preload_worker_modules:
            system_config["preload_python_modules"] = list(PRELOAD_MODULES)
        ray.init(
            num_cpus=num_cpus or 2 * cores,
            _system_config=system_config or None,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
    # Ray Data logs its streaming progress at INFO on its own handler; our log lines say
    # what step is running, so keep Ray's libraries to warnings.
    for name in ("ray.data", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return ray.cluster_resources()
