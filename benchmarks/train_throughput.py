"""Training throughput of the real anneal path against a bare PyTorch loop.

Stack: a Ray Train `TorchTrainer` running `anneal.loop.anneal_worker` (DeepSpeed on the
spec's ZeRO stage, data streamed from Parquet by Ray Data through the dataset shards), as a
sweep cell runs it. Bare: the same model, micro-batch, optimizer, schedule, clipping and
PyTorch thread count in a plain loop over the same windows held in memory.

Both are timed from the end of their first optimizer step to the end of the last: excluded
from both are process and Ray start-up, model loading, DeepSpeed initialisation, the first
step (first-call allocations; for the stack also the start of the Ray Data stream) and the
final evaluation. Runs alternate bare/stack so machine load hits both alike. The last
stdout line is JSON: ``stack_tokens_per_s``, ``bare_tokens_per_s`` (medians over rounds)
and ``ratio``.

    PYTHONPATH=. python benchmarks/train_throughput.py [--steps 40] [--rounds 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import numpy as np  # noqa: E402

from annealscale.anneal.run_spec import ScheduleSpec, TrainSpec  # noqa: E402
from annealscale.core.spec_model import from_mapping  # noqa: E402

DEMO_TRAIN = {"seq_len": 128, "batch_size": 16, "micro_batch_size": 16, "zero_stage": 1}
"""The demo spec's train section (examples/demo.yaml)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="bare/stack pairs")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads (CPUs/worker)")
    parser.add_argument("--zero-stage", type=int, default=1)
    args = parser.parse_args()

    from annealscale.anneal.demo import DemoAssets

    assets = DemoAssets()
    model_path = assets.resolve("demo:base")
    train = from_mapping(TrainSpec, {**DEMO_TRAIN, "zero_stage": args.zero_stage})
    schedule = ScheduleSpec(peak_lr=1e-3, warmup_fraction=0.1)
    work = Path(tempfile.mkdtemp(prefix="train-throughput-"))

    import ray

    from annealscale.cluster.local import connect

    connect(num_cpus=max(2, os.cpu_count() or 2))
    dirs = _packed(assets, model_path, train.seq_len, work)
    windows = _windows(dirs["replay"], args.steps * train.batch_size)

    stack, bare = [], []
    for _ in range(args.rounds):
        bare.append(_bare(model_path, train, schedule, windows, args.steps, args.threads))
        stack.append(_stack(model_path, train, schedule, dirs, args.steps, args.threads, work))
        print(f"round: bare {bare[-1]:.0f} tok/s, stack {stack[-1]:.0f} tok/s", flush=True)
    ray.shutdown()
    stack_tps, bare_tps = statistics.median(stack), statistics.median(bare)
    print(
        json.dumps(
            {
                "stack_tokens_per_s": round(stack_tps, 1),
                "bare_tokens_per_s": round(bare_tps, 1),
                "ratio": round(stack_tps / bare_tps, 4),
                "stack_runs": [round(x, 1) for x in stack],
                "bare_runs": [round(x, 1) for x in bare],
                "steps": args.steps,
                "threads": args.threads,
                "zero_stage": args.zero_stage,
                "tokens_per_step": train.tokens_per_step,
                "excluded": "start-up, model load, DeepSpeed init, first step, evaluation",
            }
        )
    )


def _packed(assets, model_path: str, seq_len: int, work: Path) -> dict[str, str]:
    from annealscale.anneal.documents import as_parquet
    from annealscale.anneal.packing import pack_documents

    cache = work / "cache"
    out = {}
    for name, split in (
        ("replay", "general_train"),
        ("domain", "math_train"),
        ("domain_eval", "math_eval"),
        ("general_eval", "general_eval"),
    ):
        docs = as_parquet(assets.resolve(f"demo:{split}"), "text", cache)
        out[name] = str(
            pack_documents(docs, tokenizer_path=model_path, seq_len=seq_len, cache_dir=cache)
        )
    return out


def _windows(packed_dir: str, rows: int) -> np.ndarray:
    from annealscale.anneal.packing import read_windows

    return read_windows(Path(packed_dir))[:rows]


def _bare(model_path, train: TrainSpec, schedule: ScheduleSpec, windows, steps, threads) -> float:
    """Tokens per second of a plain PyTorch loop (after its first step)."""
    import torch

    from annealscale.anneal.deepspeed_config import build_optimizer
    from annealscale.anneal.model import load_model
    from annealscale.anneal.schedule import linear_decay_lr, warmup_steps_for

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = load_model(model_path)
    model.train()
    optimizer = build_optimizer(train, model.parameters(), peak_lr=schedule.peak_lr)
    warmup = warmup_steps_for(steps, schedule.warmup_fraction)
    lr = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: linear_decay_lr(min(s, steps - 1), steps, peak_lr=1.0, warmup_steps=warmup),
    )
    micro = train.micro_batch_size
    accum = train.batch_size // micro
    started = None
    for step in range(steps):
        for k in range(accum):
            start = (step * accum + k) * micro % len(windows)
            batch = torch.as_tensor(windows[start : start + micro]).long()  # (micro, T + 1)
            logits = model(input_ids=batch[:, :-1]).logits  # (micro, T, V)
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1)
            )
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        lr.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 0:
            started = time.perf_counter()
    seconds = time.perf_counter() - started
    torch.set_num_threads(previous)
    return (steps - 1) * train.tokens_per_step / seconds


def _stack(model_path, train, schedule, dirs, steps, threads, work: Path) -> float:
    """Tokens per second of the anneal path (Ray Train + DeepSpeed + Ray Data)."""
    import ray.data
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from annealscale.anneal.loop import AnnealJob, anneal_worker
    from annealscale.anneal.packing import count_windows

    job = AnnealJob(
        model_path=model_path,
        trust_remote_code=False,
        train=train,
        schedule=schedule,
        steps=steps,
        domain_fraction=0.5,
        domain_pool_windows=count_windows(Path(dirs["domain"])),
        domain_eval_dir=dirs["domain_eval"],
        general_eval_dir=dirs["general_eval"],
        eval_windows=1,
        token_bytes_path=_token_bytes(model_path, work),
        seed=0,
        num_workers=1,
        threads_per_worker=threads,
    )
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    metrics_path = work / f"metrics-{time.time_ns()}.json"
    replay_rows = steps * train.batch_size
    trainer = TorchTrainer(
        anneal_worker,
        train_loop_config={"job": job},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": threads}),
        torch_config=TorchConfig(backend="gloo"),
        dataset_config=DataConfig(datasets_to_split=[]),
        datasets={
            "domain": ray.data.read_parquet(dirs["domain"]).materialize(),
            "replay": ray.data.read_parquet(dirs["replay"]).limit(replay_rows).materialize(),
        },
        run_config=RunConfig(
            name=f"throughput-{time.time_ns()}",
            storage_path=str(work / "runs"),
            callbacks=[_keep_final_metrics(str(metrics_path))],
        ),
    )
    trainer.fit()
    # Ray Train V2 keeps only checkpointed reports in its Result; the callback kept this one
    return float(json.loads(metrics_path.read_text())["steady_tokens_per_second"])


def _keep_final_metrics(path: str):
    """A Train callback that writes rank 0's final report (the one with throughput) to
    ``path``; it runs in the Train controller, on this machine."""
    from ray.train import UserCallback

    class KeepFinalMetrics(UserCallback):
        def __init__(self, path: str):
            self.path = path

        def after_report(self, run_context, metrics, checkpoint):
            if "steady_tokens_per_second" in metrics[0]:
                Path(self.path).write_text(json.dumps(metrics[0]))

    return KeepFinalMetrics(path)


def _token_bytes(model_path: str, work: Path) -> str:
    from annealscale.anneal.model import token_byte_lengths

    path = work / "token-bytes.npy"
    np.save(path, token_byte_lengths(model_path))
    return str(path)


if __name__ == "__main__":
    main()
