"""One-GPU check of the real training path: NCCL, bf16, ZeRO-2 and ZeRO-3 on a ~0.6B
Llama-style model built from a config (no download), in under 5 minutes.

For each ZeRO stage: a one-rank NCCL process group, the model saved in bf16 and loaded by
`anneal.engine.build_engine` (under ZeRO-3 straight into partitions), then a few warm-up
steps and timed steps of the chunked loss. Reported per stage: tokens/s, MFU against the
device's dense bf16 peak (`anneal.memory_plan.GPU_KINDS`, or ``--peak-flops``), the
measured peak of allocated GPU memory (``torch.cuda.max_memory_allocated``) and the
planner's estimate for the same setup without its framework margin, and their ratio.
The last stdout line is JSON.

On a machine without a usable GPU it prints one line saying so and exits 0.

    PYTHONPATH=. python benchmarks/gpu_check.py [--steps 10] [--seq-len 2048] [--micro 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro", type=int, default=4)
    parser.add_argument("--peak-flops", type=float, default=None, help="device FLOP/s")
    parser.add_argument("--stages", default="2,3")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(
            f"gpu_check: no usable GPU here (torch {torch.__version__}, CUDA "
            f"{torch.version.cuda or 'none'}); nothing measured"
        )
        return 0

    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForCausalLM

    from annealscale.anneal import memory_plan
    from annealscale.anneal.engine import build_engine
    from annealscale.anneal.flops import ModelShape, train_flops
    from annealscale.anneal.loop import AnnealJob
    from annealscale.anneal.run_spec import ScheduleSpec, TrainSpec

    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "29533",
            "RANK": "0",
            "WORLD_SIZE": "1",
            "LOCAL_RANK": "0",
        }
    )
    dist.init_process_group("nccl", rank=0, world_size=1)
    torch.cuda.set_device(0)
    name = torch.cuda.get_device_name(0)
    peak = args.peak_flops or _peak_for(name, memory_plan.GPU_KINDS)
    config = LlamaConfig(  # ~0.6B: Llama-3 shape at 1/4 width and 1/2 depth, 128k vocab
        vocab_size=128256,
        hidden_size=1536,
        intermediate_size=5376,
        num_hidden_layers=16,
        num_attention_heads=12,
        num_key_value_heads=4,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        tie_word_embeddings=True,
    )
    directory = tempfile.mkdtemp(prefix="gpu-check-")
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(directory)
    dims = memory_plan.model_dims(config)
    shape = ModelShape(
        non_embedding_params=dims.params - dims.vocab_size * dims.d_model,
        n_layer=dims.n_layer,
        d_model=dims.d_model,
        vocab_size=dims.vocab_size,
    )
    tokens_per_step = args.micro * args.seq_len
    results = {"device": name, "model_params": dims.params, "peak_flops": peak}
    for stage in [int(s) for s in args.stages.split(",")]:
        train = TrainSpec(
            seq_len=args.seq_len,
            batch_size=args.micro,
            micro_batch_size=args.micro,
            zero_stage=stage,
            precision="bf16",
        )
        job = AnnealJob(
            model_path=directory,
            trust_remote_code=False,
            train=train,
            schedule=ScheduleSpec(peak_lr=1e-4, warmup_fraction=0.0),
            steps=args.warmup + args.steps,
            domain_fraction=0.5,
            domain_pool_windows=1,
            domain_eval_dir="",
            general_eval_dir="",
            eval_windows=0,
            token_bytes_path="",
            seed=0,
            num_workers=1,
            threads_per_worker=1,
            expect_cuda=True,
        )
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        engine = build_engine(job, world_size=1, use_gpu=True).engine
        batch = torch.randint(0, config.vocab_size, (args.micro, args.seq_len + 1), device="cuda")
        for step in range(args.warmup + args.steps):
            if step == args.warmup:
                torch.cuda.synchronize()
                started = time.time()
            loss = engine(batch[:, :-1], batch[:, 1:])
            engine.backward(loss)
            engine.step()
        torch.cuda.synchronize()
        seconds = time.time() - started
        measured = torch.cuda.max_memory_allocated()
        setup = memory_plan.TrainSetup(
            zero_stage=stage,
            bf16=True,
            micro_batch_size=args.micro,
            seq_len=args.seq_len,
            activation_checkpointing=False,
            offload_optimizer=False,
            gpus=1,
            gpu_memory_bytes=torch.cuda.get_device_properties(0).total_memory,
        )
        planned = memory_plan.plan(dims, setup)
        planned_bytes = planned.total - planned.margin
        flops = train_flops(shape, tokens_per_step * args.steps, args.seq_len)
        results[f"zero{stage}"] = {
            "tokens_per_second": tokens_per_step * args.steps / seconds,
            "mfu": flops / seconds / peak if peak else None,
            "final_loss": float(loss),
            "peak_memory_bytes": measured,
            "planned_bytes": planned_bytes,
            "plan_over_measured": planned_bytes / measured,
        }
        del engine, loss
    dist.destroy_process_group()
    print(json.dumps(results))
    return 0


def _peak_for(device_name: str, kinds: dict) -> float | None:
    lowered = device_name.lower()
    for key in ("h200", "h100", "a100", "b200", "l40s", "a10g"):
        if key in lowered:
            matches = [v for k, v in kinds.items() if k.startswith(key)]
            return matches[0][1] if matches else None
    return None


if __name__ == "__main__":
    sys.exit(main())
