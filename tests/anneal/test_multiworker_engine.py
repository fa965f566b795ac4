"""Two data-parallel ranks (real processes, gloo, DeepSpeed on CPU in bf16), without Ray:
an engine stopped after a checkpoint and rebuilt from it in fresh processes continues with
exactly the losses of an uninterrupted run, under ZeRO-2 and ZeRO-3; and ZeRO-3 loading
leaves each rank about 1/world of the model's parameter bytes.

The Ray path around it (a Train worker SIGKILLed, restored by Ray Train) is covered by
`tests/tune/test_recovery.py`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import save_tiny_llama

pytestmark = pytest.mark.slow

WORLD = 2
STEPS = 6
SAVE_AT = 3

WORKER = textwrap.dedent(
    """
    import json, os, shutil, sys
    os.environ["DS_ACCELERATOR"] = "cpu"
    import torch, torch.distributed as dist
    args = json.loads(sys.argv[1])
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", rank=rank, world_size=int(os.environ["WORLD_SIZE"]))
    torch.set_num_threads(1)
    torch.manual_seed(args["seed"])
    import numpy as np
    from annealscale.anneal.checkpoint import WorkerState, load, save
    from annealscale.anneal.evaluate import nll_and_bytes
    from annealscale.anneal.engine import build_engine
    from annealscale.anneal.loop import AnnealJob
    from annealscale.anneal.run_spec import ScheduleSpec, TrainSpec
    from annealscale.anneal.zero3_load import local_parameter_bytes

    def run(stage):
        torch.manual_seed(args["seed"])
        ckpt = os.path.join(args["ckpt"], f"zero{stage}")
        train = TrainSpec(seq_len=16, batch_size=8, micro_batch_size=2, zero_stage=stage,
                          precision="bf16")
        job = AnnealJob(model_path=args["model"], trust_remote_code=False, train=train,
                        schedule=ScheduleSpec(peak_lr=1e-2, warmup_fraction=0.0),
                        steps=args["steps"], domain_fraction=0.5, domain_pool_windows=1,
                        domain_eval_dir="", general_eval_dir="", eval_windows=0,
                        token_bytes_path="", seed=0, num_workers=2, threads_per_worker=1)
        built = build_engine(job, world_size=2, use_gpu=False)
        engine = built.engine
        out = {"param_bytes": local_parameter_bytes(engine.module.lm),
               "dtype": str(next(engine.module.lm.parameters()).dtype)}
        start = 0
        if args["resume"]:
            start = load(engine, ckpt, rank, restore_rng=True).step
        g = torch.Generator().manual_seed(1234)
        data = torch.randint(0, 97, (args["steps"], built.accumulation, 2, 2, 17), generator=g)
        losses = []
        for step in range(start, args["steps"]):
            for micro in range(built.accumulation):
                batch = data[step, micro, rank]  # (micro_batch, seq_len + 1)
                loss = engine(batch[:, :-1], batch[:, 1:])
                engine.backward(loss)
                engine.step()
                losses.append(float(loss))
            if step + 1 == args["save_at"] and not args["resume"]:
                state = WorkerState(step=step + 1, domain_rows=0, replay_rows=0)
                shutil.copytree(save(engine, state, rank), ckpt, dirs_exist_ok=True)
                dist.barrier()
        out["losses"] = losses
        out["accumulation"] = built.accumulation
        # evaluation calls the Hugging Face model directly (no engine), as the evaluator does
        windows = data[0, 0].reshape(-1, 17).numpy()
        nll, nbytes = nll_and_bytes(engine.module.lm, windows, np.ones(97, dtype=np.int64),
                                    batch_size=2)
        out["eval_nll_per_token"] = nll / nbytes
        return out

    result = {str(stage): run(stage) for stage in args["stages"]}
    print(f"RESULT{rank} " + json.dumps(result), flush=True)
    dist.barrier()
    dist.destroy_process_group()
    """
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    # an embedding padding row, which weight initialisers touch
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), pad_token_id=0)


def _run(model: str, *, resume: bool, ckpt: str) -> list[dict]:
    """Both stages, one after the other, in one pair of fresh rank processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = {
        "model": model,
        "stages": [2, 3],
        "steps": STEPS,
        "save_at": SAVE_AT,
        "resume": resume,
        "ckpt": ckpt,
        "seed": 0,
    }
    procs = []
    for rank in range(WORLD):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, json.dumps(args)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=840)
        assert proc.returncode == 0, err[-3000:]
        line = [x for x in out.splitlines() if x.startswith("RESULT")][-1]
        results.append(json.loads(line.split(" ", 1)[1]))
    return results


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    ckpt = str(tmp_path_factory.mktemp("ckpt"))
    whole = _run(tiny_model, resume=False, ckpt=ckpt)
    # the rank processes ended after the checkpoint; fresh ones resume from it
    resumed = _run(tiny_model, resume=True, ckpt=ckpt)
    return whole, resumed


@pytest.mark.parametrize("stage", ["2", "3"])
def test_two_ranks_resume_from_a_checkpoint_to_the_same_losses(runs, stage):
    whole, resumed = runs
    for rank in range(WORLD):
        full, later = whole[rank][stage], resumed[rank][stage]
        assert full["dtype"] == later["dtype"] == "torch.bfloat16"
        assert len(full["losses"]) == STEPS * full["accumulation"] > 1
        assert later["losses"] == full["losses"][SAVE_AT * full["accumulation"] :]
        # it trained: the loss moved
        assert full["losses"][-1] != full["losses"][0]
        assert full["eval_nll_per_token"] == later["eval_nll_per_token"] < 6


def test_zero3_loading_leaves_each_rank_about_half_the_parameters(runs, tiny_model):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    whole, _ = runs
    with torch.device("meta"):
        full = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_model))
    model_bytes = sum(p.numel() * 2 for p in full.parameters())  # bf16
    for rank in range(WORLD):
        assert whole[rank]["2"]["param_bytes"] == pytest.approx(model_bytes)
        assert 0.45 <= whole[rank]["3"]["param_bytes"] / model_bytes <= 0.6
