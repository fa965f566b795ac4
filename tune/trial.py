"""One cell as a Ray Tune trial.

A single-worker cell anneals in the trial's own process (`tune.warm`), which Tune reuses
across cells, so it pays the imports and the process group once per process instead of a
Train run per cell. A multi-worker cell's trial is a driver that launches a Ray Train run
(Ray Train V2 pattern: Tune reserves only this driver; the `TorchTrainer` reserves its own
workers). The Train run is named after the cell's identity, so a retried or resumed trial
finds the same run and resumes it from its latest checkpoint; a lost worker is replaced and
resumes from that checkpoint too (``FailureConfig``). Worker metrics reach Tune through
`TuneReportCallback`, including the compute the trial actually spent; the driver adds where
and when this attempt ran. A WSD cell first obtains its trunk checkpoint (`tune.trunks`),
then trains only its cooldown.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from annealscale.tune.plans import CellPlan

DRIVER_CPUS = 0.25
"""Logical CPUs reserved for each trial's driver: it only waits on the Train run."""
SKIPPED = "skipped_finished"
"""Metric a trial reports instead of running when its cell already has a finished row."""
DEFERRED = "deferred_claimed_elsewhere"
"""Metric a restored trial reports instead of running when another live sweep holds its
cell's claim: the cell is neither finished nor failed, and runs later in this sweep."""
FINAL = "attempt_finished_at"
"""Metric only the driver's last report carries: the trial's result is complete."""


@dataclass(frozen=True, kw_only=True)
class TrialSettings:
    """What every trial of a sweep shares besides its plan."""

    train_storage: str
    """Ray Train storage path (local or URI); runs are ``cell-<identity>`` under it (warm
    cells keep their checkpoints there too, in `tune.warm`'s layout)."""
    results_root: str
    """The results store, checked before running so a finished cell never reruns."""
    resources: object
    """`tune.spec.ResourcesSpec`."""
    worker_failures: int
    """Train worker-group restarts per trial attempt (`ray.train.FailureConfig`)."""
    trunks_root: str
    """Local or mounted directory of WSD trunks, one per trunk identity, with their locks."""
    claims: object = None
    """`tune.claims.Claims` of this sweep run: a trial claims its cell before training."""

    preemption_failures: int = -1
    """Restarts after a node preemption (a drained spot node), counted apart from
    ``worker_failures`` (`FailureConfig.max_preemption_failures`; -1: unlimited)."""


class SharedPlans:
    """The sweep's cell plans as its trials read them, by identity.

    The driver puts them in Ray's object store once; a trial process unpickles them on its
    first cell and keeps them for the cells it runs after (Tune reuses a warm trial's
    process). Handed to every trial directly (`tune.with_parameters`), all the plans were
    unpickled again for every cell: 133 ms per cell in a sweep of 10,000 cells, so the
    sweep's trial time grew with the square of its size."""

    _cached: ClassVar[tuple[str, Mapping[str, CellPlan]] | None] = None
    """This process's last plans read: (object id, plans)."""

    def __init__(self, plans: Mapping[str, CellPlan]):
        import ray

        self._ref = ray.put(dict(plans))

    def _plans(self) -> Mapping[str, CellPlan]:
        import ray

        key = self._ref.hex()
        if SharedPlans._cached is None or SharedPlans._cached[0] != key:
            SharedPlans._cached = (key, ray.get(self._ref))
        return SharedPlans._cached[1]

    def __contains__(self, identity: object) -> bool:
        return identity in self._plans()

    def __getitem__(self, identity: str) -> CellPlan:
        return self._plans()[identity]


def train_run_name(identity: str) -> str:
    return f"cell-{identity}"


def runs_warm(resources) -> bool:
    """Whether cells with these resources anneal in the Tune trial's own process: one
    worker, and no ``driver_resources`` (a spec that keeps drivers on safe nodes, away from
    spot workers, needs the driver and the worker to be separate processes)."""
    return resources.num_workers == 1 and not resources.driver_resources


def trial_resources(resources) -> dict:
    """What one trial reserves: the worker itself when warm, else only the Train driver
    (the `TorchTrainer` reserves its workers)."""
    if not runs_warm(resources):
        return {"CPU": DRIVER_CPUS, **resources.driver_resources}
    bundle = {"CPU": resources.cpus_per_worker, **resources.driver_resources}
    if resources.gpus_per_worker:
        bundle["GPU"] = resources.gpus_per_worker
    return bundle


def _backend(resources) -> str:
    if resources.torch_backend != "auto":
        return resources.torch_backend
    return "nccl" if resources.gpus_per_worker else "gloo"


def run_cell(
    config: dict, *, plans: Mapping[str, CellPlan] | SharedPlans, settings: TrialSettings
) -> None:
    """Tune function trainable: anneal the cell named by ``config["cell_id"]``
    (`anneal_cell`) under this sweep's claim.

    The sweep driver claimed the cell before Tune started this trial
    (`tune.claimed_cells`); here the claim is only confirmed (a retry refreshes it). A
    trial restored from an interrupted experiment (``--resume``) was started without one:
    if another live sweep holds its cell, it reports `DEFERRED` at once, holding no worker
    while it waits, and the sweep's fresh searcher runs the cell later."""
    from ray import tune

    from annealscale.tune.results import ResultsStore

    identity = config["cell_id"]
    claims = settings.claims
    if (
        claims is not None
        and identity in plans
        and not ResultsStore(settings.results_root).has_finished(identity)  # skipped below
        and not claims.acquire(identity)
    ):
        holder = claims.holder(identity) or {}
        print(
            f"cell {identity}: being trained by another sweep ({holder.get('host')}, "
            f"pid {holder.get('pid')}); left to it for now"
        )
        tune.report({DEFERRED: 1})
        return None
    return anneal_cell(config, plans=plans, settings=settings)


def anneal_cell(
    config: dict, *, plans: Mapping[str, CellPlan] | SharedPlans, settings: TrialSettings
) -> None:
    """Anneal the cell named by ``config["cell_id"]`` and report its metrics to Tune."""
    import ray
    import ray.data
    from ray import tune

    from annealscale.tune.cell_data import cell_datasets
    from annealscale.tune.results import ResultsStore
    from annealscale.tune.train_runs import set_aside_if_damaged
    from annealscale.tune.trunks import obtain_branch

    started = time.time()
    identity = config["cell_id"]
    # A restored experiment may still list a cell finished since (by this sweep before a
    # crash, or by another sweep sharing the storage): never run it twice.
    if identity not in plans or ResultsStore(settings.results_root).has_finished(identity):
        tune.report({SKIPPED: 1})
        return
    plan = plans[identity]
    # Deterministic data: the replay `limit` and the shard order must not depend on which
    # read task finishes first. Train's data config copies this context.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    job = dataclasses.replace(
        plan.job, flops_per_step=plan.row["train_flops"] / max(plan.job.steps, 1)
    )
    if plan.trunk is not None:

        def train_segment(segment_job, name, root):
            return fit_anneal(plan, segment_job, settings, name=name, storage_path=root, keep=None)

        branch = obtain_branch(plan, settings.trunks_root, train_segment)
        job = dataclasses.replace(
            job,
            start_checkpoint=branch.path,
            branch_step=plan.trunk.branch_step,
            trunk_steps_trained=branch.trained_steps,
        )
    datasets = cell_datasets(
        plan.domain_dir,
        plan.replay_dir,
        plan.replay_rows,
        in_process=runs_warm(settings.resources),
    )
    set_aside_if_damaged(settings.train_storage, train_run_name(identity))
    fit_started = time.time()
    result = fit_anneal(
        plan,
        job,
        settings,
        name=train_run_name(identity),
        storage_path=settings.train_storage,
        keep=plan.checkpoints_kept,
        to_trial=True,
        datasets=datasets,
    )
    # One more report from the driver: the worker's metrics plus this attempt's node and
    # interval (what the multi-node and concurrency checks read).
    tune.report(
        {
            **(result.metrics or {}),
            "driver_node": ray.get_runtime_context().get_node_id(),
            "attempt_started_at": started,
            FINAL: time.time(),
            # driver imports, trunk and dataset materialisation, then the whole Train run
            "driver_setup_seconds": fit_started - started,
            "fit_seconds": time.time() - fit_started,
        }
    )


def fit_anneal(
    plan: CellPlan,
    job,
    settings: TrialSettings,
    *,
    name: str,
    storage_path: str,
    keep,
    to_trial: bool = False,
    datasets: dict | None = None,
):
    """Run ``job`` as the run ``name`` under ``storage_path`` on the cell's datasets
    (``datasets``, else read here): in this process when single-worker, else as a Ray
    Train run; its Result. ``to_trial``: the run's reports reach this Tune trial as they
    come (the cell's own run; a trunk segment's do not)."""
    from annealscale.tune.cell_data import cell_datasets
    from annealscale.tune.placement import placement_strategy

    resources = settings.resources
    backend = _backend(resources)
    warm = runs_warm(resources)
    datasets = datasets or cell_datasets(
        plan.domain_dir, plan.replay_dir, plan.replay_rows, in_process=warm
    )
    if warm:
        from annealscale.tune.warm import fit_in_process

        return fit_in_process(
            job,
            run_dir=f"{storage_path.rstrip('/')}/{name}",
            keep=keep,
            datasets=datasets,
            backend=backend,
            forward=to_trial,
        )
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from annealscale.anneal.loop import anneal_worker

    per_worker = {"CPU": resources.cpus_per_worker}
    if resources.gpus_per_worker:
        per_worker["GPU"] = resources.gpus_per_worker
    trainer = TorchTrainer(
        anneal_worker,
        train_loop_config={"job": job},
        torch_config=TorchConfig(backend=backend),
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers,
            use_gpu=resources.gpus_per_worker > 0,
            resources_per_worker=per_worker,
            placement_strategy=placement_strategy(resources),
        ),
        # One worker reads its datasets whole; splitting would only add a coordinator
        # actor per dataset (a process start each, seconds on a small machine).
        dataset_config=DataConfig(datasets_to_split="all" if resources.num_workers > 1 else []),
        datasets=datasets,
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            callbacks=[TuneReportCallback()] if to_trial else [],
            failure_config=FailureConfig(
                max_failures=settings.worker_failures,
                max_preemption_failures=settings.preemption_failures,
            ),
            checkpoint_config=CheckpointConfig(num_to_keep=keep),
        ),
    )
    return trainer.fit()
