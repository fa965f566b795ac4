"""Connecting to Ray: an embedded local instance by default, an existing cluster by address."""

from __future__ import annotations

import logging
import os

from annealscale.core.errors import AnnealscaleError
from annealscale.core.redact import redact

log = logging.getLogger(__name__)


LOCAL_TRAIN_ENV = {
    # A laptop has no preemptible nodes: skip the watcher actor (one process start per run).
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    # The controller notices a finished worker group at its next poll (default every 2 s);
    # locally a poll is cheap and each cell's teardown waits on it.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}
"""Ray Train settings for the embedded local instance, unless already set in the
environment (``benchmarks/sweep_overhead.py`` measures a cell's fixed costs)."""


LOCAL_SYSTEM_CONFIG = {
    # Ray prestarts idle workers for the first driver before that driver's job is
    # registered (their job id is ffffffff), so no task or actor of the job can use them:
    # on a 2-core machine, two Python processes (a second of CPU each) started and left
    # idle per instance.
    "prestart_worker_first_driver": False,
}
"""Ray system settings of the embedded local instance."""


LOCAL_START_ATTEMPTS = 3
SLOW_START = "timed out during startup"
"""What Ray says when its raylet registered too late, the one start failure worth retrying."""


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
) -> dict:
    """Initialise Ray once; return the cluster's resources.

    Locally, Ray is started in-process on loopback with twice as many logical CPUs as
    cores: each anneal's driver and Ray Data's streaming tasks mostly wait, and reserving a
    whole core for them would leave a 2-core laptop able to run one anneal at a time.
    Token authentication is left to the cluster; the local instance runs without it, and
    with `LOCAL_TRAIN_ENV`.
    """
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, TimeoutError, ValueError) as err:
            raise AnnealscaleError(
                redact(
                    f"--address {address}: cannot connect to a Ray cluster "
                    f"({_first_line(err)}); check the address and that the cluster is up, or "
                    "unset RAY_ADDRESS to run locally"
                )
            ) from None
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        for name, value in LOCAL_TRAIN_ENV.items():
            os.environ.setdefault(name, value)  # the local raylet's workers inherit these
        cores = os.cpu_count() or 1
        for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
            before = _children()
            try:
                ray.init(
                    # Never join a Ray that `ray start` left on this host (a test's token
                    # head, a user's own cluster): a local run owns its instance.
                    address="local",
                    num_cpus=num_cpus or 2 * cores,
                    include_dashboard=False,
                    _system_config=LOCAL_SYSTEM_CONFIG,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    _node_ip_address="127.0.0.1",
                )
                break
            except Exception as err:  # Ray raises a bare Exception when its raylet is slow
                try:
                    ray.shutdown()  # stop whatever part of the instance did start
                except Exception:  # noqa: BLE001 - the start's error is the one to report
                    pass
                # Ray waits a fixed 30 s for its raylet; a busy machine can take longer.
                if SLOW_START in str(err) and attempt < LOCAL_START_ATTEMPTS:
                    log.warning("local Ray did not start within Ray's 30 s; trying again")
                    _stop(_children() - before)  # ray.shutdown() cannot: no node was set
                    continue
                # Never advise `ray stop`: it ends every Ray on the host, other users' too.
                raise AnnealscaleError(
                    f"cannot start a local Ray instance ({_first_line(err)}); if the machine "
                    "is busy, retry when it is quieter, or pass --address to use a running "
                    "cluster"
                ) from None
    # Ray Data logs its streaming progress at INFO on its own handler; our log lines say
    # what step is running, so keep Ray's libraries to warnings.
    for name in ("ray.data", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return ray.cluster_resources()


def _children() -> set:
    import psutil

    return set(psutil.Process().children(recursive=True))


def _stop(processes: set) -> None:
    """End the processes a failed start left (its GCS, raylet and workers)."""
    import psutil

    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(processes), timeout=10)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
