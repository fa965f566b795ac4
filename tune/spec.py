"""The experiment spec: one YAML file, loaded into frozen spec models and validated before
any compute starts. Errors name the field path and the fix, e.g.
``sources[1].params.usd_per_token: must be positive (USD per token)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field

from annealscale.anneal.run_spec import (
    CheckpointSpec,
    DataSpec,
    EvalSpec,
    ModelSpec,
    PricesSpec,
    ScheduleSpec,
    TrainSpec,
)
from annealscale.anneal.schedule import branch_step
from annealscale.anneal.sources import SourceSpec
from annealscale.core.errors import check
from annealscale.core.hashing import to_plain
from annealscale.core.redact import has_userinfo, redact
from annealscale.core.spec_model import SpecModel, from_mapping
from annealscale.core.spec_yaml import load_yaml
from annealscale.tune.adaptive_spec import AdaptiveSpec

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
"""An experiment name: one path component (it names the Tune experiment's directory under
the storage path), so no separators, no ``..`` and no leading dot."""


class GridSpec(SpecModel):
    """The cells: every source x curation spend x training tokens x seed."""

    curation_spend: tuple[float, ...]
    """Curation spends (USD), for sources that do not list their own."""
    train_tokens: tuple[int, ...]
    """Training tokens per anneal (tokens), rounded down to whole optimizer steps."""
    seeds: tuple[int, ...] = (0,)
    """Replicates of each cell."""

    def validate_spec(self) -> None:
        check(len(self.curation_spend) > 0, "curation_spend", "must list at least one spend")
        check(
            all(0 < c < math.inf for c in self.curation_spend),
            "curation_spend",
            "spends must be positive and finite (USD)",
        )
        check(
            len(set(self.curation_spend)) == len(self.curation_spend),
            "curation_spend",
            "must not repeat",
        )
        check(len(self.train_tokens) > 0, "train_tokens", "must list at least one budget")
        check(all(d > 0 for d in self.train_tokens), "train_tokens", "budgets must be positive")
        check(
            len(set(self.train_tokens)) == len(self.train_tokens), "train_tokens", "must not repeat"
        )
        check(len(self.seeds) > 0, "seeds", "must list at least one seed")
        check(len(set(self.seeds)) == len(self.seeds), "seeds", "must not repeat")


class ResourcesSpec(SpecModel):
    """Where each anneal runs; not part of any identity hash."""

    num_workers: int = 1
    """Ray Train workers per anneal (data parallel)."""
    cpus_per_worker: int = 1
    """CPUs reserved per worker; also its PyTorch thread count on CPU."""
    gpus_per_worker: int = 0
    """GPUs per worker; 0 trains on CPU (gloo, fp32)."""
    gpus_per_node: int = 8
    """GPUs in one node (one worker pod or VM). A cell whose GPUs (num_workers x
    gpus_per_worker) fit one node runs all its ranks on one node (NVLink; placement
    ``STRICT_PACK``), a larger cell must fill whole nodes; the memory plan advises on nodes
    per cell from it too."""
    max_concurrent_trials: int | None = None
    """Cap on simultaneous anneals; derived from the cluster's resources when absent."""
    driver_resources: Mapping[str, float] = Field(default_factory=dict)
    """Custom Ray resources each trial's driver asks for, e.g. ``{on_demand: 0.001}`` with
    that resource declared only on non-preemptible nodes, so a spot node going away takes
    workers (which Train restarts) but never a driver."""
    gpu_kind: str | None = None
    """The GPUs' kind (e.g. ``h100-80gb``, ``a100-80gb``, ``h200``; table in
    `anneal.memory_plan.GPU_KINDS`): gives their memory for the memory plan and their peak
    FLOP/s for MFU."""
    gpu_memory_gib: float | None = None
    """Memory of one GPU (GiB); overrides ``gpu_kind``'s. With GPUs and neither field set,
    ``annealscale validate`` prints no memory plan."""
    peak_flops: float | None = None
    """Dense bf16 peak of one device (FLOP/s) for MFU; overrides ``gpu_kind``'s."""
    torch_backend: Literal["auto", "nccl", "gloo"] = "auto"
    """Process-group backend: ``auto`` is nccl with GPUs and gloo without; gloo lets
    logical GPUs (CPU nodes declaring GPU resources, as in tests) schedule like real ones."""

    def validate_spec(self) -> None:
        check(self.num_workers >= 1, "num_workers", "must be at least 1")
        check(self.cpus_per_worker >= 1, "cpus_per_worker", "must be at least 1")
        check(self.gpus_per_worker >= 0, "gpus_per_worker", "must not be negative")
        check(
            self.gpu_memory_gib is None or self.gpu_memory_gib > 0,
            "gpu_memory_gib",
            "must be a positive number of GiB",
        )
        check(self.peak_flops is None or self.peak_flops > 0, "peak_flops", "must be positive")
        if self.gpu_kind is not None:
            from annealscale.anneal.memory_plan import GPU_KINDS

            check(
                self.gpu_kind.lower() in GPU_KINDS,
                "gpu_kind",
                f"unknown kind {self.gpu_kind!r}; known: {', '.join(sorted(GPU_KINDS))} "
                "(or set gpu_memory_gib and peak_flops)",
            )

        self._check_fits_nodes()
        check(
            self.max_concurrent_trials is None or self.max_concurrent_trials >= 1,
            "max_concurrent_trials",
            "must be at least 1 (or omitted to derive it from the cluster)",
        )
        for name, amount in self.driver_resources.items():
            check(
                name not in ("CPU", "GPU", "memory"),
                f"driver_resources.{name}",
                "must name a custom resource; driver CPUs are fixed and drivers use no GPU",
            )
            check(amount > 0, f"driver_resources.{name}", "must be a positive amount")

    def _check_fits_nodes(self) -> None:
        per_node = self.gpus_per_node
        check(per_node >= 1, "gpus_per_node", "must be at least 1")
        gpus = self.num_workers * self.gpus_per_worker
        check(
            self.gpus_per_worker <= per_node,
            "gpus_per_worker",
            f"{self.gpus_per_worker} GPUs per worker do not fit a node of {per_node} GPUs "
            "(resources.gpus_per_node)",
        )
        check(
            gpus <= per_node or gpus % per_node == 0,
            "num_workers",
            f"a cell of {self.num_workers} workers x {self.gpus_per_worker} GPUs = {gpus} GPUs "
            f"is larger than one node of {per_node} GPUs (resources.gpus_per_node) and not a "
            f"whole number of nodes; use at most {per_node} GPUs or a multiple of {per_node}",
        )


class RetrySpec(SpecModel):
    """How often a failing anneal is retried, at each layer; not part of any identity."""

    worker_failures: int = 1
    """Restarts of a trial's Ray Train worker group (a worker process or node lost) before
    the trial fails; each restart resumes from the run's latest checkpoint."""
    trial_failures: int = 1
    """Reruns of a failed Ray Tune trial (its driver, or a Train run out of restarts) before
    the cell is recorded as failed. A later sweep or ``--resume`` tries it again."""

    preemption_failures: int = -1
    """Restarts of a trial's worker group after a node is preempted (a spot node drained
    with notice), counted apart from ``worker_failures``; -1: unlimited. Each resumes from
    the run's latest checkpoint."""

    def validate_spec(self) -> None:
        check(self.worker_failures >= 0, "worker_failures", "must be 0 or more")
        check(
            self.preemption_failures >= -1,
            "preemption_failures",
            "must be -1 (unlimited), 0 or more",
        )
        check(self.trial_failures >= 0, "trial_failures", "must be 0 or more")


class RetentionSpec(SpecModel):
    """What stays on storage once cells finish (`tune.retention`); not part of any
    identity. Results rows are always kept; this is about checkpoints."""

    keep_final: bool = False
    """Keep each finished cell's final checkpoint (weights and optimizer state after its
    last step, under ``train/cell-<identity>/``); without it no weights of a finished cell
    are kept."""
    delete_checkpoints: bool = True
    """Delete a cell's periodic checkpoints once its finished row is written (a finished
    cell never reruns, so they can no longer be resumed from)."""
    delete_trunks: bool = True
    """Delete a WSD trunk's branch checkpoints once every cell of the sweep branching from
    it is finished (a later sweep with new budgets on the same trunk retrains it)."""


class TrackingSpec(SpecModel):
    """Optional experiment trackers fed by Ray Tune's logger callbacks; all off by default.
    Not part of any identity."""

    tensorboard: bool = False
    """Write TensorBoard event files in each trial's directory (needs ``tensorboardX``)."""
    mlflow_tracking_uri: str | None = None
    """Log each cell as an MLflow run to this tracking URI (``file:///...`` works offline;
    needs the ``mlflow`` extra)."""
    wandb_project: str | None = None
    """Log each cell as a Weights & Biases run in this project (needs the ``wandb`` extra;
    set ``WANDB_MODE=offline`` without network)."""
    progress_seconds: float = 30.0
    """Seconds between live progress lines (cells done/running/failed, tokens, compute
    against the budget, ETA); ``--quiet`` silences them."""

    def validate_spec(self) -> None:
        check(self.progress_seconds > 0, "progress_seconds", "must be positive (seconds)")
        check(
            not has_userinfo(self.mlflow_tracking_uri or ""),
            "mlflow_tracking_uri",
            f"{redact(self.mlflow_tracking_uri or '')} carries credentials, which would be "
            "written to provenance.json and logs; set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD in the environment instead",
        )


class ExperimentSpec(SpecModel):
    """A whole experiment: what to anneal, on which sources, over which grid."""

    name: str
    """Name of the experiment, used in reports and job ids (not part of any identity)."""
    base_model: ModelSpec
    """The checkpoint every anneal starts from."""
    replay: DataSpec
    """General documents replayed beside the domain data (the pre-training distribution)."""
    eval: EvalSpec
    """Held-out sets and tasks every anneal (and the base model) is measured on."""
    sources: tuple[SourceSpec, ...]
    """The candidate data sources, compared with each other (names unique)."""
    grid: GridSpec
    """The cells: curation spends x training tokens x seeds, for every source."""
    domain_fraction: float
    """Fraction r of training tokens drawn from the curated pool; the rest is replay."""
    schedule: ScheduleSpec
    """Learning-rate schedule of every anneal."""
    prices: PricesSpec
    """Prices that turn compute into USD, so every cost is reported in both."""
    train: TrainSpec = Field(default_factory=TrainSpec)
    """Optimisation settings: context, global and micro batch, ZeRO stage, precision."""
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    """Workers, CPUs and GPUs per anneal, concurrency (not part of any identity)."""
    retries: RetrySpec = Field(default_factory=RetrySpec)
    """Retries of lost workers and failed trials (not part of any identity)."""
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    """Experiment trackers and progress lines (not part of any identity)."""
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    """Periodic checkpoints for recovery; not part of any identity."""
    retention: RetentionSpec = Field(default_factory=RetentionSpec)
    """Which checkpoints stay on storage after cells finish (not part of any identity)."""
    storage_path: str = "runs/storage"
    """Where results, checkpoints, curated pools and packed data go, laid out by identity:
    a local or mounted directory, or an ``s3://`` / ``gs://`` URI (shared by all nodes)."""
    adaptive: AdaptiveSpec = Field(default_factory=AdaptiveSpec)
    """Target, stop rule and batch size of ``sweep --adaptive`` (ignored by a grid sweep)."""

    def validate_spec(self) -> None:
        check(bool(self.name.strip()), "name", "must not be empty")
        check(
            bool(SAFE_NAME.match(self.name)) and len(self.name) <= 100,
            "name",
            f"{self.name!r} must be letters, digits, '.', '_' and '-' (at most 100, not "
            "starting with '.' or '-'): it names a directory inside storage_path",
        )
        for field, text in _strings(to_plain(self)):
            check(
                not has_userinfo(text),
                field,
                f"{redact(text)} carries credentials, which would be written to "
                "provenance.json and logs; give them through the environment instead "
                "(AWS_*, GOOGLE_APPLICATION_CREDENTIALS, a .netrc)",
            )
        check(bool(self.storage_path.strip()), "storage_path", "must not be empty")
        check(len(self.sources) > 0, "sources", "list at least one source")
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        check(not dupes, "sources", f"source names must be unique; repeated: {', '.join(dupes)}")
        check(
            0 < self.domain_fraction <= 1,
            "domain_fraction",
            f"must be in (0, 1], got {self.domain_fraction}",
        )
        per_step = self.train.tokens_per_step
        steps_seen: dict[int, int] = {}
        for i, tokens in enumerate(self.grid.train_tokens):
            check(
                tokens >= per_step,
                f"grid.train_tokens[{i}]",
                f"{tokens} tokens is less than one optimizer step "
                f"(train.batch_size x train.seq_len = {per_step} tokens)",
            )
            steps = tokens // per_step
            check(
                steps not in steps_seen,
                f"grid.train_tokens[{i}]",
                f"{tokens} tokens is the same number of optimizer steps ({steps}) as "
                f"{self.grid.train_tokens[steps_seen.get(steps, 0)]}; budgets are whole steps of "
                f"{per_step} tokens",
            )
            steps_seen[steps] = i
            if self.schedule.kind == "wsd":
                branch = branch_step(steps, self.schedule.cooldown_fraction)
                check(
                    branch >= self.schedule.warmup_steps,
                    "schedule.warmup_steps",
                    f"{self.schedule.warmup_steps} warmup steps do not end before the cooldown "
                    f"of grid.train_tokens[{i}] ({tokens} tokens) starts at step {branch}; "
                    "shorten the warmup or raise the budget",
                )
        for i, source in enumerate(self.sources):
            if source.curation_spend is not None:
                check(
                    len(set(source.curation_spend)) == len(source.curation_spend),
                    f"sources[{i}].curation_spend",
                    "must not repeat",
                )
        shard = self.train.micro_batch_size * self.resources.num_workers
        check(
            self.train.batch_size % shard == 0,
            "train.batch_size",
            f"must be a multiple of micro_batch_size x resources.num_workers ({shard})",
        )

    def spends_for(self, source: SourceSpec) -> tuple[float, ...]:
        return source.curation_spend or self.grid.curation_spend


def _strings(plain: object, path: str = "") -> list[tuple[str, str]]:
    """Every string in a plain spec with its field path."""
    if isinstance(plain, str):
        return [(path, plain)]
    if isinstance(plain, dict):
        return [
            pair
            for key, value in plain.items()
            for pair in _strings(value, f"{path}.{key}" if path else str(key))
        ]
    if isinstance(plain, list):
        return [pair for i, value in enumerate(plain) for pair in _strings(value, f"{path}[{i}]")]
    return []


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate the YAML spec at ``path``."""
    data = load_yaml(path)
    check(data is not None, str(path), "is empty; write a spec (see examples/demo.yaml)")
    return parse_spec(data)


def parse_spec(data: object) -> ExperimentSpec:
    """Validate an already-parsed spec mapping."""
    return from_mapping(ExperimentSpec, data)
