"""The anneal itself: what each Ray Train worker, or a warm Tune trial process, runs.

Top to bottom: load the base checkpoint, wrap it in DeepSpeed, stream the mixture from
the ``domain`` and ``replay`` dataset shards, step with the schedule, evaluate held-out
bits per byte, report. The anneal reads only the `AnnealJob` it is given and talks to
whoever started it through a `Session` (`anneal.session`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from annealscale.anneal.checkpoint import Start, WorkerState, checkpoint_name, discard
from annealscale.anneal.checkpoint import load as load_checkpoint
from annealscale.anneal.checkpoint import save as save_checkpoint
from annealscale.anneal.harness import TaskSuite
from annealscale.anneal.mixture import RowStream, domain_counts, epochs_over
from annealscale.anneal.run_spec import ScheduleSpec, TrainSpec
from annealscale.anneal.session import Session, TrainSession

ROWS_PER_READ = 64
SHUFFLE_BUFFER_ROWS = 256
REPEAT_CACHE_BYTES = 512 * 2**20
"""Pools up to this size (bytes of token ids) are repeated from memory, not re-read."""


@dataclass(frozen=True, kw_only=True)
class AnnealJob:
    """Everything one anneal needs, with every path resolved."""

    model_path: str
    """Resolved base checkpoint directory or hub id."""
    trust_remote_code: bool
    train: TrainSpec
    schedule: ScheduleSpec
    steps: int
    """Optimizer steps; training tokens are ``steps * train.tokens_per_step``."""
    domain_fraction: float
    """Fraction of training sequences drawn from the curated pool."""
    domain_pool_windows: int
    """Windows in the curated pool, for the repetition count."""
    domain_eval_dir: str
    """Packed held-out domain windows (Parquet directory)."""
    general_eval_dir: str
    """Packed held-out general windows (Parquet directory)."""
    eval_windows: int
    """Windows evaluated per set, spread over the whole set."""
    token_bytes_path: str
    """``.npy`` of UTF-8 bytes per token id (bits-per-byte denominator)."""
    seed: int
    """Replicate seed: orders the shuffled data streams."""
    num_workers: int
    threads_per_worker: int
    """PyTorch intra-op threads per CPU worker."""
    deepspeed_user_config: dict | None = None
    """The user's validated DeepSpeed JSON (``train.deepspeed_config``), if any."""
    eval_every_steps: int = 0
    """Evaluate bits per byte every this many optimizer steps (0: only at the end)."""
    tasks: TaskSuite | None = None
    """Evaluation tasks run at the end through lm-evaluation-harness (`anneal.harness`)."""
    checkpoint_every: int = 0
    """Report a checkpoint every this many optimizer steps (0: none)."""
    checkpoint_steps: tuple[int, ...] = ()
    """Steps after which a checkpoint is always reported (a trunk's branch points)."""
    start_checkpoint: str | None = None
    """A trunk checkpoint directory to branch from instead of the base model."""
    branch_step: int = 0
    """Steps the trunk checkpoint ``start_checkpoint`` had trained (0: none)."""
    trunk_steps_trained: int = 0
    """Trunk steps this cell's trial trained before its cooldown (compute-spent ledger)."""
    flops_per_step: float = 0.0
    """Training FLOPs of one optimizer step (compute-spent ledger)."""
    trunk: bool = False
    """A WSD trunk segment: constant rate after warmup up to ``steps``, no evaluation."""
    expect_cuda: bool = False
    """Workers were given GPUs and must use CUDA (false for logical GPUs under gloo)."""
    activation_checkpointing: bool = False
    """Recompute decoder layers in the backward pass (resolved from the spec and the
    memory plan by `tune.prepare`)."""
    peak_flops: float = 0.0
    """Dense peak FLOP/s of one device, for MFU (0: unknown, no MFU reported)."""


def anneal_worker(config: dict) -> None:
    """Ray Train worker entry point: ``config["job"]`` is an `AnnealJob`."""
    anneal(config["job"], TrainSession())


def anneal(job: AnnealJob, session: Session) -> None:
    """Run ``job`` as rank ``session.rank`` of ``session.world_size``, reporting to
    ``session``."""
    from annealscale.anneal.engine import build_engine, prepare_threads

    use_gpu = prepare_threads(job.threads_per_worker, expect_cuda=job.expect_cuda)
    import ray
    import torch

    from annealscale.anneal.evaluator import Evaluator

    torch.manual_seed(job.seed)
    rank, world = session.rank, session.world_size
    started = time.time()
    built = build_engine(job, world_size=world, use_gpu=use_gpu)
    engine, device, accum = built.engine, built.device, built.accumulation
    model = engine.module.lm  # the Hugging Face model (engine.module adds the loss)
    micro = job.train.micro_batch_size
    evaluator = Evaluator(job, rank=rank, world=world, device=device, batch_size=micro)

    start = resume(engine, job, rank, session)
    setup_seconds = time.time() - started
    counts = domain_counts(job.steps * accum, micro, job.domain_fraction)  # per micro-batch
    domain = RowStream(_epochs(session.dataset("domain"), job.seed))
    replay = RowStream(_epochs(session.dataset("replay"), job.seed + 1))
    done_micro = start.state.step * accum
    domain.skip(int(counts[:done_micro].sum()))
    replay.skip(done_micro * micro - int(counts[:done_micro].sum()))
    _check_stream_position(start.state, domain, replay)
    tokens_per_micro = micro * world * job.train.seq_len
    losses = []
    train_started = time.time()
    data_seconds = 0.0
    first_step_seconds = 0.0
    for step in range(start.state.step, job.steps):
        for k_domain in counts[step * accum : (step + 1) * accum]:
            fetch_started = time.time()
            rows = np.concatenate([domain.take(int(k_domain)), replay.take(micro - int(k_domain))])
            data_seconds += time.time() - fetch_started
            batch = _to_device(rows, device)  # (micro, seq_len + 1)
            loss = engine(batch[:, :-1], batch[:, 1:])  # chunked logits, never all at once
            engine.backward(loss)
            engine.step()
            losses.append(loss.detach())  # on the device: no host sync per micro-batch
        if step == start.state.step:
            first_step_seconds = time.time() - train_started
        if not job.trunk:
            evaluator.after_step(model, step + 1, (step + 1) * accum * tokens_per_micro, session)
        if _checkpoint_due(job, step + 1):
            _raise_if_weights_diverged(engine, step + 1, device)
            state = WorkerState(
                step=step + 1,
                domain_rows=domain.rows_taken,
                replay_rows=replay.rows_taken,
                restarts=start.state.restarts,
            )
            report_checkpoint(engine, state, rank, {"train_loss": float(losses[-1])}, session)
    train_seconds = time.time() - train_started - evaluator.seconds
    if job.trunk:
        session.report({"step": job.steps, "trunk_steps": job.steps - start.state.step})
        return

    tail = max(1, len(losses) // 10)
    tail_loss = float(torch.stack(losses[-tail:]).float().mean()) if losses else float("nan")
    local = [domain.rows_taken, replay.rows_taken, tail_loss]
    domain_rows, replay_rows, loss_sum = _all_reduce_sum([float(x) for x in local], device)
    seq_len = job.train.seq_len
    train_tokens = int((domain_rows + replay_rows) * seq_len)
    metrics = evaluator.final(model, job.steps, train_tokens)
    trained_steps = job.steps - start.state.step
    steady_tokens = (trained_steps - 1) * job.train.tokens_per_step
    metrics.update(
        {
            "train_loss": loss_sum / world,  # rank-averaged
            "train_tokens": train_tokens,
            "domain_tokens": int(domain_rows * seq_len),
            "replay_tokens": int(replay_rows * seq_len),
            "domain_epochs": epochs_over(int(domain_rows), job.domain_pool_windows),
            "steps": job.steps,
            "start_step": start.state.step,
            "resumed_from_step": start.state.step if start.origin == "restore" else 0,
            "branch_step": job.branch_step,
            "worker_restarts": start.state.restarts,
            "trunk_steps_trained": job.trunk_steps_trained,
            # what this cell's trial trained: its own steps after the branch point plus any
            # trunk segment it trained for itself and its siblings
            "spent_train_flops": job.flops_per_step
            * (job.steps - job.branch_step + job.trunk_steps_trained),
            "setup_seconds": setup_seconds,
            "train_seconds": train_seconds,
            "data_wait_seconds": data_seconds,
            "wall_seconds": time.time() - started,
            "device_seconds": (time.time() - started) * world,
            "tokens_per_second": trained_steps
            * job.train.tokens_per_step
            / max(train_seconds, 1e-9),
            # after the first optimizer step: excludes stream start-up and first-call costs
            "steady_tokens_per_second": steady_tokens
            / max(train_seconds - first_step_seconds, 1e-9),
            "worker_node": ray.get_runtime_context().get_node_id(),
        }
    )
    if job.peak_flops > 0:
        # model FLOPs utilisation (PaLM, Chowdhery et al. 2022, appendix B)
        metrics["mfu"] = (
            job.flops_per_step * trained_steps / max(train_seconds, 1e-9) / (world * job.peak_flops)
        )
    _raise_if_diverged(metrics)
    session.report(metrics)


def _raise_if_diverged(metrics: dict) -> None:
    """A non-finite loss or metric at the end of the anneal fails the attempt (retried per
    the spec's retries, then recorded ``failed``, reason ``diverged``): it must never be
    stored as a finished cell. Checked here, where the values are already on the host."""
    bad = [
        f"{k}={metrics[k]}"
        for k in ("train_loss", "domain_bpb", "general_bpb")
        if k in metrics and not math.isfinite(float(metrics[k]))
    ]
    if bad:
        raise FloatingPointError("anneal diverged: " + ", ".join(bad))


def _raise_if_weights_diverged(engine, step: int, device) -> None:
    """Before a checkpoint: weights that are no longer finite fail the attempt as diverged
    here, so no checkpoint of a diverged model is stored. A retry then resumes from the
    last finite checkpoint instead of training on from NaN weights, and the attempt stops
    at the first checkpoint after the divergence, not at the end of the run. The loss alone
    cannot tell: it lags a step (computed before the update that broke the weights).

    Each rank checks the parameters it holds (its partition under ZeRO-3) with one host
    sync, and the ranks agree through one all-reduce, so all of them stop together."""
    import torch

    local = [getattr(p, "ds_tensor", p) for p in engine.module.parameters()]
    finite = bool(torch.stack([torch.isfinite(t).all() for t in local]).all())
    (bad,) = _all_reduce_sum([0.0 if finite else 1.0], device)
    if bad:
        raise FloatingPointError(
            f"anneal diverged: weights not finite after step {step}; lower "
            "schedule.peak_lr or train.weight_decay"
        )


def resume(engine, job: AnnealJob, rank: int, session: Session) -> Start:
    """Load the state this attempt starts from: the run's own latest checkpoint after a
    worker failure, else the trunk checkpoint the job branches from, else the base model."""
    with session.restored() as directory:
        if directory is not None:
            state = load_checkpoint(engine, directory, rank, restore_rng=True)
    if directory is not None:
        state = WorkerState(**{**state.__dict__, "restarts": state.restarts + 1})
        origin = "restore"
    elif job.start_checkpoint is not None:
        state = load_checkpoint(engine, job.start_checkpoint, rank, restore_rng=False)
        state = WorkerState(**{**state.__dict__, "restarts": 0})
        origin = "branch"
    else:
        return Start(state=WorkerState(step=0, domain_rows=0, replay_rows=0), origin="base")
    # a branch continues the trunk under this run's own schedule
    scheduler = engine.lr_scheduler
    for group, base_lr in zip(engine.optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = base_lr * scheduler.lr_lambdas[0](state.step)
    return Start(state=state, origin=origin)


def report_checkpoint(
    engine, state: WorkerState, rank: int, metrics: dict, session: Session
) -> None:
    """Save a checkpoint on every rank and report it to ``session``."""
    directory = save_checkpoint(engine, state, rank)
    try:
        session.report(
            {**metrics, "step": state.step}, checkpoint=directory, name=checkpoint_name(state.step)
        )
    finally:
        discard(directory)


def _checkpoint_due(job: AnnealJob, steps_done: int) -> bool:
    if steps_done in job.checkpoint_steps:
        return True
    periodic = job.checkpoint_every > 0 and steps_done % job.checkpoint_every == 0
    return periodic and steps_done < job.steps


def _check_stream_position(state: WorkerState, domain: RowStream, replay: RowStream) -> None:
    """The rows skipped on resume must be exactly those the checkpoint had consumed."""
    if (domain.rows_taken, replay.rows_taken) != (state.domain_rows, state.replay_rows):
        raise RuntimeError(
            f"resumed data streams at ({domain.rows_taken}, {replay.rows_taken}) rows but the "
            f"checkpoint at step {state.step} had consumed "
            f"({state.domain_rows}, {state.replay_rows})"
        )


def _epochs(shard, seed: int, cache_bytes: int = REPEAT_CACHE_BYTES):
    """Epoch factory for a `RowStream` over a dataset shard.

    The first epoch streams from Ray Data. A pool small enough to keep is kept in memory
    and later epochs replay it in a fresh seeded order: restarting the streaming read for
    every repetition cost about 2 s per epoch here, more than the training itself at the
    demo's scale. Larger pools are streamed again each epoch.
    """
    kept: list[np.ndarray] = []
    state = {"bytes": 0, "complete": False}

    def stream(index: int):
        for batch in shard.iter_batches(
            batch_size=ROWS_PER_READ,
            batch_format="numpy",
            prefetch_batches=2,
            local_shuffle_buffer_size=SHUFFLE_BUFFER_ROWS,
            local_shuffle_seed=seed * 100_003 + index,
        ):
            tokens = batch["tokens"]
            rows = np.stack(tokens) if tokens.dtype == object else tokens  # (n, seq_len + 1)
            if index == 0 and state["bytes"] <= cache_bytes:
                kept.append(rows)
                state["bytes"] += rows.nbytes
            yield rows
        state["complete"] = index == 0 and state["bytes"] <= cache_bytes

    def epoch(index: int):
        if index == 0 or not state["complete"]:
            return stream(index)
        pool = np.concatenate(kept)
        order = np.random.default_rng([seed, index]).permutation(len(pool))
        return iter(np.array_split(pool[order], max(1, len(pool) // ROWS_PER_READ)))

    return epoch


def _to_device(rows: np.ndarray, device):
    """A batch of token ids on ``device`` as int64; to a GPU through pinned memory with a
    non-blocking copy, so the copy overlaps the previous step's work."""
    import torch

    batch = torch.from_numpy(np.ascontiguousarray(rows)).long()
    if device.type != "cuda":
        return batch
    return batch.pin_memory().to(device, non_blocking=True)


def _all_reduce_sum(values: list[float], device) -> list[float]:
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()
