"""One cell as a Ray Tune trial: a driver function that launches a Ray Train run.

Ray Train V2 pattern: Tune reserves only this driver; the `TorchTrainer` reserves its own
workers. The Train run is named after the cell's identity, so a restarted trial resumes
it from its latest checkpoint, and a lost worker is replaced and resumes from that
checkpoint too (``FailureConfig``). Worker metrics reach Tune through
`TuneReportCallback`, including the compute the trial actually spent.
A WSD cell first obtains its trunk checkpoint (`tune.trunks`), then trains its cooldown.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tune.prepare import CellPlan

DRIVER_CPUS = 0.25
"""Logical CPUs reserved for each trial's driver: it only waits on the Train run."""
WORKER_FAILURES = 2
"""Train worker-group restarts allowed per Train run (each resumes from a checkpoint)."""


def run_cell(config: dict, *, plans: dict[str, CellPlan], storage_path: str, resources) -> None:
    """Tune function trainable: anneal the cell named by ``config["cell_id"]``."""
    import ray.data
    from ray.tune.integration.ray_train import TuneReportCallback

    from tune.trunks import obtain_branch

    plan = plans[config["cell_id"]]
    # Deterministic data: the replay `limit` and the shard order must not depend on which
    # read task finishes first. Train's data config copies this context.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    job = dataclasses.replace(
        plan.job, flops_per_step=plan.row["train_flops"] / max(plan.job.steps, 1)
    )
    if plan.trunk is not None:

        def train_segment(segment_job, name, root):
            return fit_anneal(plan, segment_job, resources, name=name, storage_path=root, keep=None)

        branch = obtain_branch(plan, Path(storage_path) / "trunks", train_segment)
        job = dataclasses.replace(
            job,
            start_checkpoint=branch.path,
            branch_step=plan.trunk.branch_step,
            trunk_steps_trained=branch.trained_steps,
        )
    fit_anneal(
        plan,
        job,
        resources,
        name=f"cell-{plan.cell.identity}",
        storage_path=storage_path,
        keep=plan.checkpoints_kept,
        callbacks=[TuneReportCallback()],
    )


def fit_anneal(plan: CellPlan, job, resources, *, name: str, storage_path: str, keep, callbacks=()):
    """Run ``job`` as a Ray Train run named ``name`` on the cell's datasets; its Result."""
    import ray.data
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from anneal.loop import anneal_worker

    per_worker = {"CPU": resources.cpus_per_worker}
    if resources.gpus_per_worker:
        per_worker["GPU"] = resources.gpus_per_worker
    trainer = TorchTrainer(
        anneal_worker,
        train_loop_config={"job": job},
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers,
            use_gpu=resources.gpus_per_worker > 0,
            resources_per_worker=per_worker,
        ),
        # One worker reads its datasets whole; splitting would only add a coordinator
        # actor per dataset (a process start each, seconds on a small machine).
        dataset_config=DataConfig(datasets_to_split="all" if resources.num_workers > 1 else []),
        datasets={
            "domain": ray.data.read_parquet(plan.domain_dir).materialize(),
            "replay": ray.data.read_parquet(plan.replay_dir).limit(plan.replay_rows).materialize(),
        },
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            callbacks=list(callbacks),
            failure_config=FailureConfig(max_failures=WORKER_FAILURES),
            checkpoint_config=CheckpointConfig(num_to_keep=keep),
        ),
    )
    return trainer.fit()
