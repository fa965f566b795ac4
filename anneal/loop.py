"""The anneal itself: what each Ray Train worker runs.

Top to bottom: load the base checkpoint, wrap it in DeepSpeed, stream the mixture from
the ``domain`` and ``replay`` dataset shards, step with the schedule, evaluate held-out
bits per byte, report. The worker reads only the `AnnealJob` it is given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from anneal.mixture import RowStream, domain_counts, epochs_over
from anneal.run_spec import ScheduleSpec, TrainSpec

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
    tasks: tuple[tuple[str, str], ...] = ()
    """Multiple-choice tasks as (name, encoded ``.npz`` path)."""


def anneal_worker(config: dict) -> None:
    """Ray Train worker entry point: ``config["job"]`` is an `AnnealJob`."""
    job: AnnealJob = config["job"]
    from anneal.engine import build_engine, prepare_threads

    use_gpu = prepare_threads(job.threads_per_worker)
    import ray.train
    import torch

    from anneal.evaluator import Evaluator

    torch.manual_seed(job.seed)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    started = time.time()
    built = build_engine(job, world_size=world, use_gpu=use_gpu)
    engine, device, accum = built.engine, built.device, built.accumulation
    micro = job.train.micro_batch_size
    evaluator = Evaluator(job, rank=rank, world=world, device=device, batch_size=micro)

    setup_seconds = time.time() - started
    domain = RowStream(_epochs(ray.train.get_dataset_shard("domain"), job.seed))
    replay = RowStream(_epochs(ray.train.get_dataset_shard("replay"), job.seed + 1))
    counts = domain_counts(job.steps * accum, micro, job.domain_fraction)
    tokens_per_micro = micro * world * job.train.seq_len
    losses = []
    train_started = time.time()
    data_seconds = 0.0
    first_step_seconds = 0.0
    for micro_step, k_domain in enumerate(counts, start=1):
        fetch_started = time.time()
        rows = np.concatenate([domain.take(int(k_domain)), replay.take(micro - int(k_domain))])
        data_seconds += time.time() - fetch_started
        batch = torch.as_tensor(rows, device=device).long()  # (micro, seq_len + 1)
        logits = engine(input_ids=batch[:, :-1]).logits  # (micro, seq_len, V)
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1)
        )
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
        if micro_step % accum == 0:
            step = micro_step // accum
            if step == 1:
                first_step_seconds = time.time() - train_started
            evaluator.after_step(engine.module, step, micro_step * tokens_per_micro)
    train_seconds = time.time() - train_started - evaluator.seconds

    local = [domain.rows_taken, replay.rows_taken]
    domain_rows, replay_rows = _all_reduce_sum([float(x) for x in local], device)
    seq_len = job.train.seq_len
    train_tokens = int((domain_rows + replay_rows) * seq_len)
    metrics = evaluator.final(engine.module, job.steps, train_tokens)
    tail = max(1, len(losses) // 10)
    steady_tokens = train_tokens - job.train.tokens_per_step
    metrics.update(
        {
            "train_loss": float(np.mean(losses[-tail:])),
            "train_tokens": train_tokens,
            "domain_tokens": int(domain_rows * seq_len),
            "replay_tokens": int(replay_rows * seq_len),
            "domain_epochs": epochs_over(int(domain_rows), job.domain_pool_windows),
            "steps": job.steps,
            "setup_seconds": setup_seconds,
            "train_seconds": train_seconds,
            "data_wait_seconds": data_seconds,
            "wall_seconds": time.time() - started,
            "device_seconds": (time.time() - started) * world,
            "tokens_per_second": train_tokens / max(train_seconds, 1e-9),
            # after the first optimizer step: excludes stream start-up and first-call costs
            "steady_tokens_per_second": steady_tokens
            / max(train_seconds - first_step_seconds, 1e-9),
            "worker_node": ray.get_runtime_context().get_node_id(),
        }
    )
    ray.train.report(metrics)


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


def _all_reduce_sum(values: list[float], device) -> list[float]:
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()
