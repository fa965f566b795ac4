"""Running a grid sweep: plan the cells, hand the unfinished ones to Ray Tune, record each
cell's row as soon as its trial ends, consolidate ``results.parquet``.

Finished rows live under the storage path by cell identity (`tune.results`), so a rerun,
a resumed sweep or another spec sharing the storage runs only cells that have none.
``resume`` also restores the Tune experiment (trial ids, errored trials restarted, a
trial in flight continued); without it a fresh experiment runs the same unfinished cells.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from annealscale.anneal.evaluator import task_metric_names
from annealscale.core import durable
from annealscale.core.errors import AnnealscaleError
from annealscale.core.hashing import content_hash, to_plain
from annealscale.tune.cells import Cell, expand_grid
from annealscale.tune.claimed_cells import CellQueue, ClaimingSearcher, longest_first
from annealscale.tune.claims import Claims, new_owner, stale_seconds_from_env
from annealscale.tune.fifo import LiveFIFO
from annealscale.tune.interrupts import Interrupts, SweepInterrupted
from annealscale.tune.orphans import OrphanedPlacementGroups
from annealscale.tune.plans import SweepPlan
from annealscale.tune.prepare import inputs_identity, prepare
from annealscale.tune.progress import ProgressCallback, SweepProgress, planned_usd, pool_of
from annealscale.tune.results import ResultsStore
from annealscale.tune.retention import retention_callbacks
from annealscale.tune.spec import ExperimentSpec, ResourcesSpec
from annealscale.tune.storage import StorageLayout
from annealscale.tune.tracking import check_trackers, tracker_callbacks
from annealscale.tune.trunks import attach_trunks

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
    "eval_tokens",
    "steady_tokens_per_second",
    "wall_seconds",
    "device_seconds",
    "tokens_per_second",
    "attempt_started_at",
    "attempt_finished_at",
    "driver_setup_seconds",
    "fit_seconds",
    "start_step",
    "resumed_from_step",
    "branch_step",
    "worker_restarts",
    "trunk_steps_trained",
    "spent_train_flops",
    "mfu",
)
TEXT_COLUMNS = ("driver_node", "worker_node")
"""Where the last attempt ran (Ray node ids)."""
DATA_CPUS = 0.5
"""Logical CPUs left free per anneal for Ray Data's streaming reads."""


@dataclass(frozen=True)
class SweepOutcome:
    results_path: Path
    finished: int
    failed: int
    skipped: int
    """Cells already finished under the storage path and not run again."""
    seconds: float
    ran: int = 0
    """Cells whose trials ran in this call (finished or failed)."""
    restored: bool = False
    """Whether the Tune experiment was restored (``resume``)."""
    spent_train_flops: float = 0.0
    """Training FLOPs the sweep's cells actually cost (shared WSD trunks counted once)."""
    independent_train_flops: float = 0.0
    """Training FLOPs of the same cells each run alone (the sum of ``train_flops``)."""


def max_concurrent_trials(
    cluster_cpus: float,
    cluster_gpus: float,
    resources: ResourcesSpec,
    driver_cpus: float,
    custom: Mapping[str, float] | None = None,
) -> int:
    """Simultaneous anneals the cluster can hold without any of them waiting.

    Each anneal needs its workers plus its driver, and Ray Data needs some CPU beside each
    anneal to stream its shards; GPUs bound the count when workers use them, and the
    drivers' custom resources (``custom``: the cluster's totals) bound it too.
    """
    per_trial_cpus = resources.num_workers * resources.cpus_per_worker + driver_cpus + DATA_CPUS
    count = math.floor(cluster_cpus / per_trial_cpus)
    if resources.gpus_per_worker:
        by_gpu = math.floor(cluster_gpus / (resources.num_workers * resources.gpus_per_worker))
        count = min(count, by_gpu)
    for name, amount in resources.driver_resources.items():
        count = min(count, math.floor((custom or {}).get(name, 0.0) / amount + 1e-9))
    return max(1, count)


def run_sweep(
    spec: ExperimentSpec,
    out_dir: str | Path,
    *,
    resolve: Callable[[str], str],
    threads: int | None = None,
    resume: bool = False,
    search_alg: Callable[..., tune.search.Searcher] | None = None,
    force: bool = False,
) -> SweepOutcome:
    """Run every unfinished cell of ``spec`` on the connected Ray cluster.

    ``search_alg(plans=..., store=..., concurrency=...)``, when given, builds a Tune
    `Searcher` that chooses which of the unfinished cells run (``sweep --adaptive``);
    without it every unfinished cell runs (the grid).

    ``out_dir`` remembers the spec that wrote it (``provenance.json``): another spec is
    refused unless ``force``. Provenance, ``results.parquet`` and ``compute.json`` are
    written (atomically) only when the sweep gets to its end; a Ctrl-C or SIGTERM raises
    `tune.interrupts.SweepInterrupted` after stopping the running cells, writing none.
    """
    with Interrupts() as interrupts:
        try:
            return _run_sweep(
                spec, out_dir, resolve, threads, resume, search_alg, force, interrupts
            )
        except Exception:
            if interrupts.signum is None:
                raise
            # whatever broke while stopping (a Ray process hit by the same Ctrl-C) is a
            # consequence of the interrupt, not a failure to report
            raise SweepInterrupted(interrupts.signum) from None


def _run_sweep(spec, out_dir, resolve, threads, resume, search_alg, force, interrupts):
    started = time.time()
    check_trackers(spec.tracking)
    out_dir = Path(out_dir).resolve()
    provenance = _provenance(spec)
    _check_out_dir(out_dir, provenance["spec_hash"], force)
    out_dir.mkdir(parents=True, exist_ok=True)
    layout = StorageLayout.of(spec.storage_path)
    store = ResultsStore(layout.results)
    store.quarantine_corrupt()

    inputs = inputs_identity(spec, resolve)
    all_cells = expand_grid(spec, inputs.shared, inputs.per_source)
    identities = {c.identity for c in all_cells}
    done = store.finished_ids()
    todo = [c for c in all_cells if c.identity not in done]
    log.info(
        "%d cells: %d finished earlier, %d to run",
        len(all_cells),
        len(all_cells) - len(todo),
        len(todo),
    )
    ran, restored = 0, False
    if todo:
        from annealscale.tune.capacity import check_capacity
        from annealscale.tune.trial import DRIVER_CPUS

        check_capacity(spec.resources, DRIVER_CPUS)
        plan = prepare(
            spec,
            resolve=resolve,
            storage=layout.local_root,
            threads=threads or os.cpu_count() or 1,
            cells=todo,
            inputs=inputs,
        )
        plan = attach_trunks(spec, plan, inputs)
        stamp = {k: provenance[k] for k in ("spec_hash", "code_version", "git_commit")}
        _record_unprepared(plan, todo, store, stamp)
        ran = len(plan.failed)
        if plan.cells:
            ran_trials, restored = _run_trials(
                spec, plan, identities, layout, store, stamp, resume, search_alg, interrupts
            )
            ran += ran_trials
    results_path, table = store.consolidate(
        identities, out_dir=out_dir, usd_per_pflop=spec.prices.usd_per_pflop
    )
    finished = int((table["status"] == "finished").sum()) if not table.empty else 0
    failed = int((table["status"] == "failed").sum()) if not table.empty else 0
    spent, independent = _compute_spent(table)
    summary = {
        "spent_train_flops": spent,
        "independent_train_flops": independent,
        "spent_ratio": spent / independent if independent else None,
    }
    durable.write_text(out_dir / "compute.json", json.dumps(summary, indent=2))
    durable.write_text(out_dir / "provenance.json", json.dumps(provenance, indent=2, default=str))
    _name_failures(table)
    log.info("training compute: %.4g FLOPs spent, %.4g run independently", spent, independent)
    return SweepOutcome(
        results_path=results_path,
        finished=finished,
        failed=failed,
        skipped=len(all_cells) - len(todo),
        seconds=time.time() - started,
        ran=ran,
        restored=restored,
        spent_train_flops=spent,
        independent_train_flops=independent,
    )


def _compute_spent(table) -> tuple[float, float]:
    """Training FLOPs actually spent by the finished cells, and what they cost alone."""
    if table.empty or "spent_train_flops" not in table:
        return 0.0, 0.0
    done = table[table["status"] == "finished"]
    spent = done["spent_train_flops"].fillna(done["train_flops"])
    return float(spent.sum()), float(done["train_flops"].sum())


def experiment_name(spec: ExperimentSpec, identities: set[str]) -> str:
    """The Tune experiment of a spec's grid: the same cells give the same name."""
    return f"{spec.name}-{content_hash(sorted(identities))}"


def _run_trials(
    spec: ExperimentSpec,
    plan: SweepPlan,
    identities: set[str],
    layout: StorageLayout,
    store: ResultsStore,
    stamp: dict,
    resume: bool,
    search_alg=None,
    interrupts: Interrupts | None = None,
    trial=None,
) -> tuple[int, bool]:
    """Run ``plan``'s cells as Tune trials; returns (cells run, experiment restored).

    ``trial``: the function trainable, `tune.trial.run_cell` unless given (the engine
    benchmark, ``benchmarks/sweep_scale.py``, passes a no-op anneal)."""
    import ray

    from annealscale.tune.trial import (
        DRIVER_CPUS,
        SharedPlans,
        TrialSettings,
        run_cell,
        runs_warm,
        trial_resources,
    )

    cluster = ray.cluster_resources()
    concurrency = spec.resources.max_concurrent_trials or max_concurrent_trials(
        cluster.get("CPU", 1), cluster.get("GPU", 0), spec.resources, DRIVER_CPUS, cluster
    )
    plans = {p.cell.identity: p for p in plan.cells}
    settings = TrialSettings(
        train_storage=layout.train,
        results_root=layout.results,
        resources=spec.resources,
        worker_failures=spec.retries.worker_failures,
        trunks_root=str(layout.local_root / "trunks"),
        claims=Claims(layout.results, new_owner(), stale_seconds_from_env()),
        preemption_failures=spec.retries.preemption_failures,
    )
    trainable = tune.with_resources(
        tune.with_parameters(trial or run_cell, plans=SharedPlans(plans), settings=settings),
        tune.PlacementGroupFactory([trial_resources(spec.resources)]),
    )
    warm = runs_warm(spec.resources)
    # A warm cell has no Train worker group to restart: its worker restarts become Tune
    # retries of the trial, from the run's last checkpoint (tune.warm).
    trial_failures = spec.retries.trial_failures + (spec.retries.worker_failures if warm else 0)
    rows = {i: p.row for i, p in plans.items()}
    progress = SweepProgress(
        total=len(plans),
        budget_flops=sum(r["train_flops"] + r["eval_flops"] for r in rows.values()),
        budget_usd=planned_usd(rows.values()),
        concurrency=concurrency,
    )
    writer = _CellRowWriter(plan, store, stamp, store.failed_attempts(set(plans)), settings.claims)
    interrupts = interrupts or Interrupts()
    name = experiment_name(spec, identities)

    table = store.read()
    finished = table[table["status"] == "finished"] if len(table) else table
    # pools curated for cells finished earlier are paid; one set for every callback of this run
    paid_pools = {pool_of(r) for r in finished.to_dict("records")}

    def callbacks() -> list:
        return [
            writer,
            ProgressCallback(progress, rows, spec.tracking.progress_seconds, paid_pools),
            *retention_callbacks(spec, plans, layout.train, settings.trunks_root, store),
            *tracker_callbacks(spec.tracking, name),
            OrphanedPlacementGroups(),
        ]

    experiment_dir = f"{layout.tune}/{name}"
    restored = resume and _restorable(experiment_dir)
    log.info("running %d anneals, at most %d at a time", len(plans), concurrency)
    if restored:
        log.info("resuming Tune experiment %s", experiment_dir)
        tuner = tune.Tuner.restore(
            experiment_dir, trainable, resume_unfinished=True, restart_errored=True
        )
        # tuner.pkl holds the interrupted run's callbacks; this run's plans and counters
        # must receive the events instead.
        tuner._local_tuner.get_run_config().callbacks = callbacks()
        with interrupts.tune_running(), settings.claims.keep_alive():
            tuner.fit()
    missing = [i for i in plans if i not in writer.seen]
    if missing:
        if restored:
            log.info("%d cell(s) not in the restored experiment; running them", len(missing))
        if search_alg is None:
            # with parallel slots, largest first ends the sweep sooner; one at a time the
            # order changes nothing but which cells finish first, so the grid's stands
            order = longest_first(missing, rows) if concurrency > 1 else missing
            searcher = CellQueue(order)
        else:
            todo = {i: plans[i] for i in missing}
            searcher = search_alg(plans=todo, store=store, concurrency=concurrency)
            budget = getattr(searcher, "budget", None)
            progress.as_adaptive(
                None if budget is None else budget - getattr(searcher, "spent", 0.0)
            )
        # a cell reaches Tune only once this sweep holds its claim: a trial never waits
        # for another sweep while holding a worker (tune.claimed_cells)
        searcher = ClaimingSearcher(
            searcher, settings.claims, store, stopping=lambda: interrupts.signum is not None
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                num_samples=len(missing),
                max_concurrent_trials=concurrency,
                reuse_actors=warm,
                scheduler=LiveFIFO(),
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=layout.tune,
                callbacks=callbacks(),
                failure_config=tune.FailureConfig(max_failures=trial_failures),
                verbose=0,  # the progress callback logs instead
            ),
        )
        with interrupts.tune_running(), settings.claims.keep_alive():
            tuner.fit()
    return len(writer.written), restored


def _check_out_dir(out_dir: Path, spec_hash: str, force: bool) -> None:
    """Refuse an ``out_dir`` holding another spec's results, unless ``force``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise AnnealscaleError(f"--out {out_dir}: is a file; give a directory")
    try:
        earlier = json.loads((out_dir / "provenance.json").read_text()).get("spec_hash")
    except (OSError, ValueError, AttributeError):
        return
    if earlier and earlier != spec_hash and not force:
        raise AnnealscaleError(
            f"--out {out_dir}: holds the results of another spec (spec_hash {earlier[:12]}, "
            f"this spec {spec_hash[:12]}); give another --out, or pass --force to replace them"
        )


def _name_failures(table) -> None:
    """One warning per failed cell of the consolidated table: which cell, and why."""
    if table.empty or "status" not in table:
        return
    for row in table[table["status"] == "failed"].to_dict("records"):
        reason = row.get("reason") if isinstance(row.get("reason"), str) else "failed"
        log.warning(
            "cell %s %s: %s spend=%g tokens=%s seed=%s: %s",
            row["cell_id"],
            reason,
            row["source"],
            row["curation_spend"],
            row.get("train_tokens"),
            row.get("seed"),
            row.get("error"),
        )


def _provenance(spec: ExperimentSpec) -> dict:
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


def _restorable(experiment_dir: str) -> bool:
    """Whether a Tune experiment was started there and saved its trials' state at least
    once (a driver killed earlier leaves only ``tuner.pkl``: nothing to restore)."""
    import pyarrow.fs as pafs

    from annealscale.tune.storage import filesystem

    if not tune.Tuner.can_restore(experiment_dir):
        return False
    fs, path = filesystem(experiment_dir)
    listing = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return any(i.base_name.startswith("experiment_state") for i in listing)


def _record_unprepared(plan: SweepPlan, todo: list[Cell], store: ResultsStore, stamp: dict):
    """Failed rows for cells whose pool could not be prepared (`SweepPlan.failed`)."""
    earlier = store.failed_attempts(set(plan.failed))
    now = time.time()
    for cell in todo:
        if cell.identity not in plan.failed:
            continue
        store.write_row(
            {
                "cell_id": cell.identity,
                "source": cell.source,
                "source_identity": cell.source_identity,
                "curation_spend": cell.curation_spend,
                "requested_train_tokens": cell.train_tokens,
                "train_tokens": cell.train_tokens,
                "seed": cell.seed,
                **stamp,
                "status": "failed",
                "reason": "error",
                "error": plan.failed[cell.identity],
                "attempts": earlier.get(cell.identity, 0) + 1,
                "started_at": now,
                "finished_at": now,
            }
        )
        log.warning("cell %s failed before training: %s", cell.identity, plan.failed[cell.identity])


class _CellRowWriter(tune.Callback):
    """Writes a cell's row the moment its trial ends, so no finished cell is ever lost."""

    def __init__(
        self,
        plan: SweepPlan,
        store: ResultsStore,
        provenance: dict,
        earlier_attempts: dict[str, int],
        claims: Claims | None = None,
    ):
        self._claims = claims
        self._plans = {p.cell.identity: p for p in plan.cells}
        self._store = store
        self._provenance = provenance
        self._earlier_attempts = earlier_attempts
        self._started_at: dict[str, float] = {}
        self._metrics: dict[str, dict] = {}
        self.seen: set[str] = set()
        """Cells whose trial ended (finished, failed or skipped) in this run."""
        self.written: set[str] = set()
        """Cells whose trial ran and wrote a row (finished or failed) in this run."""

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started_at.setdefault(trial.config["cell_id"], time.time())
        self._metrics[trial.trial_id] = {}

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._metrics[trial.trial_id] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from annealscale.tune.trial import FINAL

        # The worker's metrics and the driver's last report arrive as separate results.
        metrics = self._metrics.setdefault(trial.trial_id, {})
        metrics.update(result)
        # The driver's last report completes the row: write it now, before Tune tells the
        # searcher and the other callbacks the trial is complete (a crash there, or of the
        # driver, must not lose a cell that finished training).
        if FINAL in result and "domain_bpb" in metrics:
            self._write(trial, dict(metrics), "finished", None)

    def on_trial_complete(self, iteration, trials, trial, **info):
        from annealscale.tune.trial import DEFERRED, SKIPPED

        metrics = {**self._metrics.pop(trial.trial_id, {}), **(trial.last_result or {})}
        if trial.config["cell_id"] in self.written:  # at the driver's last report
            return
        if DEFERRED in metrics:  # another sweep holds it: not seen, so it runs later here
            return
        if SKIPPED in metrics:
            self.seen.add(trial.config["cell_id"])
            self._release(trial.config["cell_id"])
            return
        status = "finished" if "domain_bpb" in metrics else "failed"
        error = None if status == "finished" else "trial ended without reporting metrics"
        self._write(trial, metrics, status, error)

    def on_trial_error(self, iteration, trials, trial, **info):
        metrics = {**self._metrics.pop(trial.trial_id, {}), **(trial.last_result or {})}
        self._write(trial, metrics, "failed", _error_line(trial))

    def _write(self, trial, metrics: dict, status: str, error: str | None):
        identity = trial.config["cell_id"]
        self.seen.add(identity)
        self.written.add(identity)
        plan = self._plans[identity]
        row = {**plan.row, **self._provenance}
        for column in (*METRIC_COLUMNS, *task_metric_names(plan.job)):
            value = metrics.get(column)
            row[column] = float(value) if value is not None else float("nan")
        row["eval_curve"] = metrics.get("eval_curve")
        for column in TEXT_COLUMNS:
            row[column] = str(metrics[column]) if metrics.get(column) else None
        if status == "finished":
            row["train_tokens"] = int(metrics.get("train_tokens", row["train_tokens"]))
        bad = diverged_metrics(row) if status == "finished" else {}
        if bad:  # never store a non-finite loss or metric as a finished cell
            status = "failed"
            error = f"cell {identity} diverged: " + ", ".join(f"{k}={v}" for k, v in bad.items())
        row["status"] = status
        row["reason"] = None if status == "finished" else _reason(error)
        row["error"] = error
        # Tune counts failed attempts; a trial that errored out failed on every attempt
        this_run = int(trial.num_failures) + (1 if status == "finished" else 0)
        row["attempts"] = self._earlier_attempts.get(identity, 0) + max(1, this_run)
        row["trial_id"] = trial.trial_id
        row["started_at"] = self._started_at.get(identity, time.time())
        row["finished_at"] = time.time()
        self._store.write_row(row)
        self._release(identity)
        log.log(
            logging.INFO if status == "finished" else logging.WARNING,
            "cell %s %s: %s spend=%g tokens=%d domain_bpb=%.4f attempts=%d%s",
            identity,
            status if status == "finished" else row["reason"],
            row["source"],
            row["curation_spend"],
            row["train_tokens"],
            row["domain_bpb"],
            row["attempts"],
            f" error: {error}" if error else "",
        )

    def _release(self, identity: str) -> None:
        if self._claims is not None:
            self._claims.release(identity)


def diverged_metrics(metrics: dict) -> dict[str, float]:
    """The loss and metrics of ``metrics`` that are not finite (NaN or infinite)."""
    names = ("train_loss", "domain_bpb", "general_bpb")
    return {
        k: float(metrics[k])
        for k in names
        if metrics.get(k) is not None and not math.isfinite(float(metrics[k]))
    }


def _reason(error: str | None) -> str:
    """Why a cell failed, in one word: ``diverged`` (non-finite loss or metric) or
    ``error``."""
    return "diverged" if error and " diverged: " in error else "error"


def _error_line(trial) -> str:
    """The last line of the trial's error (the exception and its message)."""
    if trial.error_file and os.path.exists(trial.error_file):
        lines = [ln.strip() for ln in Path(trial.error_file).read_text().splitlines()]
        lines = [ln for ln in lines if ln]
        if lines:
            return lines[-1][:500]
    return "trial failed"
