"""Running a grid sweep: plan the cells, hand the unfinished ones to Ray Tune, record each
cell's row as soon as its trial ends, consolidate ``results.parquet``."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from anneal.config import content_hash, to_plain
from tune.cells import expand_grid
from tune.prepare import SweepPlan, inputs_identity, prepare
from tune.results import ResultsStore
from tune.spec import ExperimentSpec, ResourcesSpec

log = logging.getLogger(__name__)

METRIC_COLUMNS = (
    "domain_bpb",
    "general_bpb",
    "train_loss",
    "domain_tokens",
    "replay_tokens",
    "domain_epochs",
    "steps",
    "setup_seconds",
    "train_seconds",
    "data_wait_seconds",
    "eval_seconds",
    "wall_seconds",
    "device_seconds",
    "tokens_per_second",
)
DATA_CPUS = 0.5
"""Logical CPUs left free per anneal for Ray Data's streaming reads."""


@dataclass(frozen=True)
class SweepOutcome:
    results_path: Path
    finished: int
    failed: int
    skipped: int
    """Cells already finished in this output directory and not run again."""
    seconds: float


def max_concurrent_trials(
    cluster_cpus: float, cluster_gpus: float, resources: ResourcesSpec, driver_cpus: float
) -> int:
    """Simultaneous anneals the cluster can hold without any of them waiting.

    Each anneal needs its workers plus its driver, and Ray Data needs some CPU beside each
    anneal to stream its shards; GPUs bound the count when workers use them.
    """
    per_trial_cpus = resources.num_workers * resources.cpus_per_worker + driver_cpus + DATA_CPUS
    by_cpu = math.floor(cluster_cpus / per_trial_cpus)
    if resources.gpus_per_worker:
        by_gpu = math.floor(cluster_gpus / (resources.num_workers * resources.gpus_per_worker))
        by_cpu = min(by_cpu, by_gpu)
    return max(1, by_cpu)


def run_sweep(
    spec: ExperimentSpec,
    out_dir: str | Path,
    *,
    resolve: Callable[[str], str],
    threads: int | None = None,
    search_alg: Callable[..., tune.search.Searcher] | None = None,
) -> SweepOutcome:
    """Run every unfinished cell of ``spec`` on the connected Ray cluster.

    ``search_alg(plans=..., store=..., concurrency=...)``, when given, builds a Tune
    `Searcher` that chooses which of the unfinished cells run (``sweep --adaptive``);
    without it every unfinished cell runs (the grid).
    """
    import ray

    from tune.trial import DRIVER_CPUS, run_cell

    started = time.time()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = Path(spec.storage_path).resolve()
    store = ResultsStore(out_dir)
    provenance = _write_provenance(spec, out_dir)

    inputs = inputs_identity(spec, resolve)
    all_cells = expand_grid(spec, inputs.shared, inputs.per_source)
    done = store.finished_ids()
    todo = [c for c in all_cells if c.identity not in done]
    log.info(
        "%d cells: %d finished earlier, %d to run",
        len(all_cells),
        len(all_cells) - len(todo),
        len(todo),
    )
    if todo:
        plan = prepare(
            spec,
            resolve=resolve,
            storage=storage,
            threads=threads or os.cpu_count() or 1,
            cells=todo,
            inputs=inputs,
        )
        cluster = ray.cluster_resources()
        concurrency = spec.resources.max_concurrent_trials or max_concurrent_trials(
            cluster.get("CPU", 1), cluster.get("GPU", 0), spec.resources, DRIVER_CPUS
        )
        plans = {p.cell.identity: p for p in plan.cells}
        trainable = tune.with_resources(
            tune.with_parameters(
                run_cell,
                plans=plans,
                storage_path=str(storage / "train"),
                resources=spec.resources,
            ),
            {"cpu": DRIVER_CPUS},
        )
        if search_alg is None:
            param_space = {"cell_id": tune.grid_search([p.cell.identity for p in plan.cells])}
            tune_config = tune.TuneConfig(max_concurrent_trials=concurrency)
        else:
            param_space = {}
            tune_config = tune.TuneConfig(
                search_alg=search_alg(plans=plans, store=store, concurrency=concurrency),
                num_samples=len(plans),
                max_concurrent_trials=concurrency,
            )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune_config,
            run_config=tune.RunConfig(
                name=f"{spec.name}-{content_hash(sorted(plans))}",
                storage_path=str(storage / "tune"),
                callbacks=[
                    _CellRowWriter(
                        plan,
                        store,
                        {k: provenance[k] for k in ("spec_hash", "code_version", "git_commit")},
                    )
                ],
                failure_config=tune.FailureConfig(max_failures=0),
                verbose=0,  # the row writer logs one line per cell instead
            ),
        )
        log.info("running %d anneals, at most %d at a time", len(plans), concurrency)
        tuner.fit()
    results_path, table = store.consolidate(
        {c.identity for c in all_cells}, usd_per_pflop=spec.prices.usd_per_pflop
    )
    finished = int((table["status"] == "finished").sum()) if not table.empty else 0
    failed = int((table["status"] == "failed").sum()) if not table.empty else 0
    return SweepOutcome(
        results_path=results_path,
        finished=finished,
        failed=failed,
        skipped=len(all_cells) - len(todo),
        seconds=time.time() - started,
    )


def _write_provenance(spec: ExperimentSpec, out_dir: Path) -> dict:
    commit = _git(["rev-parse", "HEAD"])
    if commit and _git(["status", "--porcelain", "--untracked-files=no"]):
        commit += "-dirty"
    from importlib.metadata import version

    provenance = {
        "spec": to_plain(spec),
        "spec_hash": content_hash(spec),
        "code_version": version("annealscale"),
        "git_commit": commit or None,
        "ray_version": version("ray"),
        "torch_version": version("torch"),
        "deepspeed_version": version("deepspeed"),
        "transformers_version": version("transformers"),
    }
    (out_dir / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
    return provenance


def _git(args: list[str]) -> str:
    """Output of a git command in the source tree, or "" outside a checkout."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


class _CellRowWriter(tune.Callback):
    """Writes a cell's row the moment its trial ends, so no finished cell is ever lost,
    and logs one progress line per cell with an ETA."""

    def __init__(self, plan: SweepPlan, store: ResultsStore, provenance: dict):
        self._plans = {p.cell.identity: p for p in plan.cells}
        self._store = store
        self._provenance = provenance
        self._started = time.time()
        self._done = 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        metrics = trial.last_result or {}
        status = "finished" if "domain_bpb" in metrics else "failed"
        error = None if status == "finished" else "trial ended without reporting metrics"
        self._write(trial, metrics, status, error)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = None
        if trial.error_file and os.path.exists(trial.error_file):
            lines = [ln for ln in Path(trial.error_file).read_text().splitlines() if ln.strip()]
            error = lines[-1][:500] if lines else None
        self._write(trial, {}, "failed", error or "trial failed")

    def _write(self, trial, metrics: dict, status: str, error: str | None):
        plan = self._plans[trial.config["cell_id"]]
        row = {**plan.row, **self._provenance}
        for column in METRIC_COLUMNS:
            value = metrics.get(column)
            row[column] = float(value) if value is not None else float("nan")
        if status == "finished":
            row["train_tokens"] = int(metrics.get("train_tokens", row["train_tokens"]))
        row["status"] = status
        row["error"] = error
        row["attempts"] = int(trial.num_failures) + 1
        row["trial_id"] = trial.trial_id
        self._store.write_row(row)
        self._done += 1
        elapsed = time.time() - self._started
        eta = elapsed / self._done * (len(self._plans) - self._done)
        log.info(
            "cell %d/%d %s: %s spend=%g tokens=%d domain_bpb=%.4f (%.0f s elapsed, ETA %.0f s)",
            self._done,
            len(self._plans),
            status,
            row["source"],
            row["curation_spend"],
            row["train_tokens"],
            row["domain_bpb"],
            elapsed,
            eta,
        )
