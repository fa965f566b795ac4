"""Per-trial fixed overhead of a sweep, and its share of a quick-demo cell.

Runs, on a local Ray, cells of the quick demo one at a time (``max_concurrent_trials=1``,
so cells never compete for the CPU):

- near-empty cells: one optimizer step and one evaluation window per worker and held-out set, with
  one worker (a warm cell: the anneal runs in the reused Tune trial process) and with two
  (a Ray Train run per cell, micro-batches halved so a step holds the same sequences);
- quick-demo cells: the first source at the smallest spend, at the quick demo's budgets
  (one worker, as the demo runs them).

Definitions (printed too):

- a cell's wall time: from Tune starting its trial to its row being written (the
  results-store callback), i.e. what a cell costs a sweep run one at a time;
- overhead of a cell: its wall time minus the worker's own training and evaluation
  seconds; ``overhead_s`` is the median over the near-empty cells. It holds Tune's trial
  actor start (once per process for warm cells), the driver's imports and dataset
  materialisation, for two workers Ray Train's controller and worker start (process start,
  torch/DeepSpeed/transformers imports, process group init), model load and DeepSpeed
  initialisation, and the teardowns. ``overhead_s`` is the single-worker figure (the
  demo's cells), ``overhead_s_multi_worker`` the two-worker one;
- ``overhead_share`` = ``overhead_s`` / mean wall time of the quick-demo cells.

``train_floor_s`` is measured in the same run for scale: the wall time of a bare Ray Train
V2 ``TorchTrainer.fit()`` whose worker function returns at once (controller, placement-group
cleaner and worker process starts, process-group init, teardown): the part of the
overhead no change inside annealscale can remove.
The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFINITION = (
    "overhead_s = median over near-empty cells (1 step, 1 eval window) of [trial wall time "
    "(Tune trial start -> row written) - worker train_seconds - worker eval_seconds], with "
    "one worker (warm trial process); overhead_s_multi_worker the same with two workers "
    "(a Ray Train run per cell); "
    "overhead_share = overhead_s / mean wall time of quick-demo cells run one at a time"
)
PARTS = (
    ("tune_trial_start", "Tune schedules the trial and starts its actor"),
    ("driver_setup", "driver imports, dataset materialisation"),
    ("train_start_and_teardown", "Train controller + worker start, imports, dist init, teardown"),
    ("worker_setup", "model load + DeepSpeed initialize in the worker"),
    ("work", "training steps + evaluation"),
    ("tune_trial_end", "driver's last report -> row written"),
)


def _specs(storage: Path, empty_cells: int, workers: int = 1):
    from annealscale.cluster.cli import EXAMPLES, quick_variant
    from annealscale.tune.spec import GridSpec, load_spec

    quick = quick_variant(load_spec(EXAMPLES / "demo.yaml"))
    resources = quick.resources.replace(max_concurrent_trials=1)
    train, empty_resources = quick.train, resources
    if workers > 1:
        empty_resources = resources.replace(num_workers=workers)
        train = train.replace(micro_batch_size=max(1, train.micro_batch_size // workers))
    spend = min(quick.grid.curation_spend)
    source = quick.sources[0].replace(curation_spend=None)
    empty = quick.replace(
        name=f"overhead-empty-{workers}w",
        train=train,
        sources=(source,),
        grid=GridSpec(
            curation_spend=(spend,),
            train_tokens=(quick.train.tokens_per_step,),
            seeds=tuple(range(empty_cells)),
        ),
        eval=quick.eval.replace(max_tokens=quick.train.seq_len * workers),
        resources=empty_resources,
        storage_path=str(storage),
    )
    cells = quick.replace(
        name="overhead-quick",
        sources=(source,),
        grid=GridSpec(curation_spend=(spend,), train_tokens=quick.grid.train_tokens, seeds=(0,)),
        resources=resources,
        storage_path=str(storage),
    )
    return empty, cells


def _breakdown(table) -> dict:
    wall = table["finished_at"] - table["started_at"]
    parts = {
        "tune_trial_start": table["attempt_started_at"] - table["started_at"],
        "driver_setup": table["driver_setup_seconds"],
        "train_start_and_teardown": table["fit_seconds"] - table["wall_seconds"],
        "worker_setup": table["setup_seconds"],
        "work": table["train_seconds"] + table["eval_seconds"],
        "tune_trial_end": table["finished_at"] - table["attempt_finished_at"],
    }
    return {
        "wall": wall,
        "overhead": wall - parts["work"],
        **{k: float(statistics.median(v)) for k, v in parts.items()},
    }


def bare_train_fit_s(storage: Path, repeats: int) -> list[float]:
    """Wall seconds of `repeats` no-op ``TorchTrainer.fit()`` calls (one CPU worker)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    walls = []
    for i in range(repeats):
        started = time.time()
        TorchTrainer(
            _noop,
            scaling_config=ScalingConfig(num_workers=1, use_gpu=False),
            run_config=RunConfig(name=f"noop-{i}", storage_path=str(storage)),
        ).fit()
        walls.append(round(time.time() - started, 2))
    return walls


def _noop(config: dict) -> None:
    return None


def measure(assets, root: Path, empty_cells: int) -> dict:
    import pandas as pd
    import ray

    from annealscale.cluster.local import connect
    from annealscale.tune.sweep import run_sweep

    # Own storage per sweep: a cell's identity leaves out its worker count, so sweeps
    # sharing a results store would find the other's cells finished and skip them.
    empty, quick = _specs(root / "storage-1w", empty_cells)
    empty_multi, _ = _specs(root / "storage-2w", empty_cells, workers=2)
    connect()
    try:
        result = {}
        for suffix, spec in (("", empty), ("_multi_worker", empty_multi)):
            started = time.time()
            outcome = run_sweep(spec, root / spec.name, resolve=assets.resolve)
            table = pd.read_parquet(outcome.results_path)
            assert (table["status"] == "finished").all(), table[["status", "error"]]
            assert len(table) == empty_cells, f"{spec.name}: {len(table)} rows"
            parts = _breakdown(table)
            result[f"overhead_s{suffix}"] = float(statistics.median(parts.pop("overhead")))
            result[f"empty_cell_wall_s{suffix}"] = [round(float(w), 2) for w in parts.pop("wall")]
            result[f"breakdown_median_s{suffix}"] = {k: round(v, 2) for k, v in parts.items()}
            result[f"empty_sweep_s{suffix}"] = round(time.time() - started, 1)
        outcome = run_sweep(quick, root / "quick", resolve=assets.resolve)
        table = pd.read_parquet(outcome.results_path)
        assert (table["status"] == "finished").all(), table[["status", "error"]]
        walls = table["finished_at"] - table["started_at"]
        result["quick_cell_wall_s"] = [round(float(w), 2) for w in walls]
        result["quick_cell_breakdown_median_s"] = {
            k: round(v, 2) for k, v in _breakdown(table).items() if k not in ("wall", "overhead")
        }
        result["train_floor_walls_s"] = bare_train_fit_s(root / "noop", empty_cells)
        return result
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # five: the median is then a warm cell, as all but the first of each trial process are
    parser.add_argument("--empty-cells", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    from annealscale.anneal.demo import DemoAssets

    assets = DemoAssets()
    assets.base_model()
    with tempfile.TemporaryDirectory(prefix="sweep-overhead-") as tmp:
        result = measure(assets, Path(tmp), args.empty_cells)
    print(json.dumps(result), flush=True)
    quick_wall = statistics.mean(result["quick_cell_wall_s"])
    floor = statistics.median(result["train_floor_walls_s"])
    summary = {
        "overhead_s": round(result["overhead_s"], 2),
        "overhead_s_single_worker": round(result["overhead_s"], 2),
        "overhead_s_multi_worker": round(result["overhead_s_multi_worker"], 2),
        "overhead_share": round(result["overhead_s"] / quick_wall, 3),
        "overhead_share_multi_worker": round(result["overhead_s_multi_worker"] / quick_wall, 3),
        "empty_cell_wall_s": result["empty_cell_wall_s"],
        "empty_cell_wall_s_multi_worker": result["empty_cell_wall_s_multi_worker"],
        "quick_cell_wall_s": round(quick_wall, 2),
        "quick_cell_work_s": result["quick_cell_breakdown_median_s"]["work"],
        "train_floor_s": round(floor, 2),
        "train_floor_share_of_overhead": round(floor / result["overhead_s"], 3),
        "breakdown_median_s": result["breakdown_median_s"],
        "breakdown_median_s_multi_worker": result["breakdown_median_s_multi_worker"],
        "definition": DEFINITION,
        "parts": dict(PARTS),
    }
    print(DEFINITION)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
