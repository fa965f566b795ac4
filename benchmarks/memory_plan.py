"""The memory planner against a real 2-rank ZeRO-3 bf16 run on CPU.

Two rank processes (gloo, DeepSpeed's CPU backend) load a ~40M-parameter Llama-style
checkpoint through `anneal.engine.build_engine` (ZeRO-3: straight into each rank's
partitions) and train a few steps. Each rank measures:

- the parameter bytes it holds after loading (its partitions), and the largest single
  transient it materialised while loading (one module's weights before zero.Init
  partitions them, or the checkpoint rows read for one parameter);
- the peak of tracked tensors during a training step: every tensor the Python heap holds
  after a step (partitioned parameters, gradient partitions, fp32 master weights, Adam
  moments, DeepSpeed's buffers), found by a garbage-collector scan and counted once per
  storage, plus the peak of the tensors autograd saved for the backward pass (saved-tensor
  hooks, once per storage), plus one loss chunk's logits in bf16, fp32 and their gradient.

The planner's per-rank estimate (`anneal.memory_plan.plan` without its GPU framework
margin) is compared with that peak. The last stdout line is JSON with
``zero3_rank_param_fraction`` (rank parameter bytes after loading / the model's bf16
bytes, worst rank) and ``plan_error`` (planned / measured, worst rank).

    PYTHONPATH=. python benchmarks/memory_plan.py [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap

WORKER = textwrap.dedent(
    """
    import gc, json, os, sys
    os.environ["DS_ACCELERATOR"] = "cpu"
    import torch, torch.distributed as dist
    args = json.loads(sys.argv[1])
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from annealscale.anneal.engine import build_engine
    from annealscale.anneal.loop import AnnealJob
    from annealscale.anneal.run_spec import ScheduleSpec, TrainSpec
    from annealscale.anneal.zero3_load import local_parameter_bytes

    def live_tensor_bytes():
        seen, total = set(), 0
        for obj in gc.get_objects():
            try:
                if not torch.is_tensor(obj) or obj.device.type == "meta":
                    continue
                storage = obj.untyped_storage()
            except Exception:
                continue
            if storage.data_ptr() in seen or storage.nbytes() == 0:
                continue
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return total, seen

    train = TrainSpec(seq_len=args["seq_len"], batch_size=2 * args["micro"],
                      micro_batch_size=args["micro"], zero_stage=3, precision="bf16")
    job = AnnealJob(model_path=args["model"], trust_remote_code=False, train=train,
                    schedule=ScheduleSpec(peak_lr=1e-4, warmup_fraction=0.0), steps=args["steps"],
                    domain_fraction=0.5, domain_pool_windows=1, domain_eval_dir="",
                    general_eval_dir="", eval_windows=0, token_bytes_path="", seed=0,
                    num_workers=2, threads_per_worker=1)
    built = build_engine(job, world_size=2, use_gpu=False)
    engine = built.engine
    loaded = local_parameter_bytes(engine.module.lm)
    vocab = engine.module.lm.config.vocab_size
    saved = {"now": 0, "peak": 0, "ptrs": {}}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in saved["ptrs"] and ptr not in persistent_ptrs:
            saved["ptrs"][ptr] = t.untyped_storage().nbytes()
            saved["now"] += saved["ptrs"][ptr]
            saved["peak"] = max(saved["peak"], saved["now"])
        return t

    persistent_ptrs = set()
    peak = 0
    g = torch.Generator().manual_seed(rank)
    for step in range(args["steps"]):
        batch = torch.randint(0, vocab, (args["micro"], args["seq_len"] + 1), generator=g)
        saved.update(now=0, peak=0, ptrs={})
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = engine(batch[:, :-1], batch[:, 1:])
        engine.backward(loss)
        engine.step()
        gc.collect()
        persistent, persistent_ptrs = live_tensor_bytes()
        chunk = min(1024, args["micro"] * args["seq_len"]) * vocab * (2 + 4 + 4)
        peak = max(peak, persistent + saved["peak"] + chunk)
        float(loss)
    print("RESULT " + json.dumps({"rank": rank, "loaded_param_bytes": loaded,
          "measured_peak_bytes": peak, "persistent_bytes": persistent,
          "saved_activation_bytes": saved["peak"]}), flush=True)
    dist.barrier()
    dist.destroy_process_group()
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro", type=int, default=4)
    args = parser.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from annealscale.anneal import memory_plan

    config = LlamaConfig(
        vocab_size=16000,
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
    )
    directory = tempfile.mkdtemp(prefix="memory-plan-")
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(directory)
    dims = memory_plan.model_dims(config)
    model_bytes = dims.params * 2
    largest = max(
        p.numel() * 2 for p in LlamaForCausalLM(config).parameters()
    )  # biggest one-module transient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker_args = {
        "model": directory,
        "steps": args.steps,
        "seq_len": args.seq_len,
        "micro": args.micro,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(worker_args)],
            env={
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    ranks = []
    for proc in procs:
        out, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            sys.exit(err[-3000:])
        ranks.append(json.loads(out.split("RESULT ", 1)[1].splitlines()[0]))

    setup = memory_plan.TrainSetup(
        zero_stage=3,
        bf16=True,
        micro_batch_size=args.micro,
        seq_len=args.seq_len,
        activation_checkpointing=False,
        offload_optimizer=False,
        gpus=2,
        gpu_memory_bytes=10**15,
    )
    planned = memory_plan.plan(dims, setup)
    planned_bytes = planned.total - planned.margin  # the margin is the GPU's, not CPU's
    errors = [planned_bytes / r["measured_peak_bytes"] for r in ranks]
    fractions = [r["loaded_param_bytes"] / model_bytes for r in ranks]
    result = {
        "model_params": dims.params,
        "world": 2,
        "zero3_rank_param_fraction": max(fractions),
        "largest_load_transient_fraction": largest / model_bytes,
        "planned_bytes": planned_bytes,
        "planned_parts": {
            "parameters": planned.parameters,
            "gradients": planned.gradients,
            "optimizer": planned.optimizer,
            "activations": planned.activations,
            "logits": planned.logits,
            "buffers": planned.buffers,
        },
        "measured_peak_bytes": [r["measured_peak_bytes"] for r in ranks],
        "measured_persistent_bytes": [r["persistent_bytes"] for r in ranks],
        "measured_saved_activation_bytes": [r["saved_activation_bytes"] for r in ranks],
        "plan_error": max(errors, key=lambda e: abs(e - 1)),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
