"""One cell as a Ray Tune trial: a driver function that launches a Ray Train run.

Ray Train V2 pattern: Tune reserves only this driver; the `TorchTrainer` reserves its own
workers. The Train run is named after the cell's identity (checkpoint resumption builds on
that). Worker metrics reach Tune through `TuneReportCallback`.
"""

from __future__ import annotations

from tune.prepare import CellPlan

DRIVER_CPUS = 0.25
"""Logical CPUs reserved for each trial's driver: it only waits on the Train run."""


def run_cell(config: dict, *, plans: dict[str, CellPlan], storage_path: str, resources) -> None:
    """Tune function trainable: anneal the cell named by ``config["cell_id"]``."""
    import ray.data
    from ray.train import DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from anneal.loop import anneal_worker

    plan = plans[config["cell_id"]]
    # Deterministic data: the replay `limit` and the shard order must not depend on which
    # read task finishes first. Train's data config copies this context.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    per_worker = {"CPU": resources.cpus_per_worker}
    if resources.gpus_per_worker:
        per_worker["GPU"] = resources.gpus_per_worker
    trainer = TorchTrainer(
        anneal_worker,
        train_loop_config={"job": plan.job},
        # nccl between GPU workers, gloo between CPU workers (DeepSpeed reuses the group)
        torch_config=TorchConfig(backend="nccl" if resources.gpus_per_worker else "gloo"),
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
            name=f"cell-{plan.cell.identity}",
            storage_path=storage_path,
            callbacks=[TuneReportCallback()],
            failure_config=FailureConfig(max_failures=1),
        ),
    )
    trainer.fit()
