"""Per-trial fixed overhead of a sweep, and its share of a quick-demo cell.

Runs, on a local Ray, cells of the quick demo one at a time (``max_concurrent_trials=1``,
so cells never compete for the CPU):

- near-empty cells: one optimizer step and one evaluation window per held-out set;
- quick-demo cells: the first source at the smallest spend, at the quick demo's budgets.

Definitions (printed too):

- a cell's wall time: from Tune starting its trial to its row being written (the
  results-store callback), i.e. what a cell costs a sweep run one at a time;
- overhead of a cell: its wall time minus the worker's own training and evaluation
  seconds; ``overhead_s`` is the median over the near-empty cells. It holds Tune's trial
  actor start, the driver's imports and dataset materialisation, Ray Train's controller and
  worker start (process start, torch/DeepSpeed/transformers imports, process group init),
  model load and DeepSpeed initialisation, and the teardowns;
- ``overhead_share`` = ``overhead_s`` / mean wall time of the quick-demo cells.

With ``--variants baseline,preload`` each variant runs on its own fresh local Ray, one
after the other in this process, so they are compared under the same machine load.
The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    "(Tune trial start -> row written) - worker train_seconds - worker eval_seconds]; "
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


def _specs(storage: Path, empty_cells: int):
    from cluster.cli import EXAMPLES, quick_variant
    from tune.spec import GridSpec, load_spec

    quick = quick_variant(load_spec(EXAMPLES / "demo.yaml"))
    resources = dataclasses.replace(quick.resources, max_concurrent_trials=1)
    spend = min(quick.grid.curation_spend)
    source = dataclasses.replace(quick.sources[0], curation_spend=None)
    empty = dataclasses.replace(
        quick,
        name="overhead-empty",
        sources=(source,),
        grid=GridSpec(
            curation_spend=(spend,),
            train_tokens=(quick.train.tokens_per_step,),
            seeds=tuple(range(empty_cells)),
        ),
        eval=dataclasses.replace(quick.eval, max_tokens=quick.train.seq_len),
        resources=resources,
        storage_path=str(storage),
    )
    cells = dataclasses.replace(
        quick,
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


def run_variant(name: str, assets, root: Path, empty_cells: int, with_quick: bool) -> dict:
    import pandas as pd
    import ray

    from cluster.local import connect
    from tune.sweep import run_sweep

    storage = root / name / "storage"
    empty, quick = _specs(storage, empty_cells)
    connect(preload_worker_modules=(name == "preload"))
    try:
        started = time.time()
        outcome = run_sweep(empty, root / name / "empty", resolve=assets.resolve)
        table = pd.read_parquet(outcome.results_path)
        assert (table["status"] == "finished").all(), table[["status", "error"]]
        parts = _breakdown(table)
        result = {
            "overhead_s": float(statistics.median(parts.pop("overhead"))),
            "empty_cell_wall_s": [round(float(w), 2) for w in parts.pop("wall")],
            "breakdown_median_s": {k: round(v, 2) for k, v in parts.items()},
            "empty_sweep_s": round(time.time() - started, 1),
        }
        if with_quick:
            outcome = run_sweep(quick, root / name / "quick", resolve=assets.resolve)
            table = pd.read_parquet(outcome.results_path)
            assert (table["status"] == "finished").all(), table[["status", "error"]]
            walls = table["finished_at"] - table["started_at"]
            result["quick_cell_wall_s"] = [round(float(w), 2) for w in walls]
            result["quick_cell_breakdown_median_s"] = {
                k: round(v, 2)
                for k, v in _breakdown(table).items()
                if k not in ("wall", "overhead")
            }
        return result
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--empty-cells", type=int, default=3)
    parser.add_argument(
        "--variants",
        default="preload,baseline",
        help="comma-separated: baseline (workers import lazily), preload (workers start with "
        "torch, DeepSpeed and transformers imported); the first also runs the quick cells",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    from anneal.demo import DemoAssets

    assets = DemoAssets()
    assets.base_model()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    results = {}
    with tempfile.TemporaryDirectory(prefix="sweep-overhead-") as tmp:
        for i, name in enumerate(variants):
            results[name] = run_variant(name, assets, Path(tmp), args.empty_cells, i == 0)
            print(name, json.dumps(results[name]), flush=True)
    first = results[variants[0]]
    quick_wall = statistics.mean(first["quick_cell_wall_s"])
    summary = {
        "overhead_s": round(first["overhead_s"], 2),
        "overhead_share": round(first["overhead_s"] / quick_wall, 3),
        "quick_cell_wall_s": round(quick_wall, 2),
        "variant": variants[0],
        "definition": DEFINITION,
        "parts": dict(PARTS),
        "variants": {k: {"overhead_s": round(v["overhead_s"], 2)} for k, v in results.items()},
    }
    if len(variants) > 1:
        base = results[variants[-1]]["overhead_s"]
        summary["overhead_ratio_vs_" + variants[-1]] = round(first["overhead_s"] / base, 3)
    print(DEFINITION)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
