"""Anneals of three Hugging Face architectures built from configs and saved with
``save_pretrained``, each run as a real sweep cell on the local Ray (Ray Tune trial ->
Ray Train -> DeepSpeed on CPU). One cell per architecture, each with different engine
settings, so the same runs also cover ZeRO 1/2/3, two data-parallel workers with gradient
accumulation, a user DeepSpeed JSON, intermediate evaluation and a multiple-choice task;
the ZeRO-3 cell also runs an lm-evaluation-harness task, data-parallel over its ranks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from annealscale.tune.spec import parse_spec
from annealscale.tune.sweep import run_sweep
from tests.helpers import write_math_task

# the module fixture runs four sweeps (one with two ranks): its setup counts against the
# first test, and took over 600 s beside a CPU hog on a 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

SEQ_LEN = 64
BATCH = 16
STEPS = 8
EVERY = 4


def _tiny_config(arch: str, vocab: int, eos: int):
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    if arch == "llama":
        return LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=128,
            eos_token_id=eos,
            bos_token_id=eos,
        )
    if arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab,
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=128,
            eos_token_id=eos,
            bos_token_id=eos,
        )
    return Qwen2Config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        eos_token_id=eos,
    )


def _save_model(arch: str, tokenizer_dir: str, out) -> str:
    """A randomly initialised ``arch`` model with the demo tokenizer, saved as a checkpoint.

    The GPT-2 copy's tokenizer has no pad token, as GPT-2's own has none."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if arch == "gpt2":
        tokenizer.pad_token = None
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        _tiny_config(arch, len(tokenizer), tokenizer.eos_token_id)
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def _write_task(path) -> str:
    """Six arithmetic questions in the math domain's notation."""
    lines = []
    for i in range(6):
        a, b = i + 2, 3 * i + 1
        choices = [str(a + b), str(a * b + 7), str(a - b - 5)]
        lines.append(
            json.dumps({"question": f"Compute {a} + {b} =", "choices": choices, "answer": 0})
        )
    path.write_text("\n".join(lines) + "\n")
    return str(path)


CASES = {
    # arch: (train overrides, resources, user DeepSpeed JSON or None)
    "llama": ({"zero_stage": 3, "micro_batch_size": 4}, {"num_workers": 2}, None),
    "gpt2": (
        {"micro_batch_size": 4},
        {"num_workers": 2},
        {"zero_optimization": {"stage": 2, "contiguous_gradients": True}, "gradient_clipping": 0.5},
    ),
    "qwen2": ({"zero_stage": 1, "micro_batch_size": 8}, {"num_workers": 1}, None),
}


def _spec(arch: str, model_dir: str, task: str, root) -> dict:
    train, resources, user = CASES[arch]
    train = {"seq_len": SEQ_LEN, "batch_size": BATCH, **train}
    if user is not None:
        path = root / f"{arch}-deepspeed.json"
        path.write_text(json.dumps(user))
        train["deepspeed_config"] = str(path)
    spec = {
        "name": f"arch-{arch}",
        "base_model": {"path": model_dir},
        "replay": {"path": "demo:general_train"},
        "eval": {
            "domain": {"path": "demo:math_eval"},
            "general": {"path": "demo:general_eval"},
            "max_tokens": 1024,
            "every_steps": EVERY,
            "tasks": [{"name": "arith", "path": task}],
        },
        "sources": [
            {
                "name": "textbook",
                "kind": "as_is",
                "params": {"path": "demo:math_train", "usd_per_token": 1e-5},
            }
        ],
        "grid": {"curation_spend": [0.1], "train_tokens": [STEPS * BATCH * SEQ_LEN]},
        "domain_fraction": 0.5,
        "schedule": {"peak_lr": 1e-2, "warmup_fraction": 0.1},
        "train": train,
        "resources": {"cpus_per_worker": 1, **resources},
        "prices": {"usd_per_pflop": 500.0},
        "storage_path": str(root / "storage"),
    }
    if train.get("zero_stage") == 3:  # sharded weights: the harness must not gather them
        include = write_math_task(root / "harness-tasks", questions=5)
        spec["eval"]["harness"] = {"tasks": ["mathqa_local"], "include_path": str(include)}
    return spec


@pytest.fixture(scope="module")
def rows(ray_local, tiny_assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("architectures")
    tokenizer_dir = str(tiny_assets.base_model())
    task = _write_task(root / "arith.jsonl")
    out = {}
    for arch in CASES:
        model_dir = _save_model(arch, tokenizer_dir, root / arch)
        spec = parse_spec(_spec(arch, model_dir, task, root))
        outcome = run_sweep(spec, root / f"out-{arch}", resolve=tiny_assets.resolve)
        assert outcome.finished == 1, arch
        out[arch] = pd.read_parquet(outcome.results_path).iloc[0]
    return out


@pytest.mark.parametrize("arch", list(CASES))
def test_each_architecture_anneals_and_learns(rows, arch):
    row = rows[arch]
    assert row["status"] == "finished"
    assert row["train_tokens"] == STEPS * BATCH * SEQ_LEN
    assert row["domain_tokens"] + row["replay_tokens"] == row["train_tokens"]
    assert row["domain_tokens"] == BATCH * STEPS // 2 * SEQ_LEN
    # randomly initialised: a few steps must cut bits per byte well below the base model's
    assert row["domain_bpb"] < 0.95 * row["base_domain_bpb"]
    assert row["general_bpb"] < 0.95 * row["base_general_bpb"]


@pytest.mark.parametrize("arch", list(CASES))
def test_intermediate_evaluations_form_a_curve(rows, arch):
    curve = json.loads(rows[arch]["eval_curve"])
    assert [point["step"] for point in curve] == [4, 8]
    assert [point["train_tokens"] for point in curve] == [s * BATCH * SEQ_LEN for s in (4, 8)]
    assert curve[-1]["domain_bpb"] == pytest.approx(rows[arch]["domain_bpb"])
    assert curve[0]["domain_bpb"] > curve[-1]["domain_bpb"]


@pytest.mark.parametrize("arch", list(CASES))
def test_task_metrics_and_eval_flops_are_recorded(rows, arch):
    row = rows[arch]
    assert 0.0 <= row["arith_accuracy"] <= 1.0
    assert row["arith_logprob"] < 0 and row["base_arith_logprob"] < 0
    assert row["arith_accuracy"] in {k / 6 for k in range(7)}
    assert row["eval_flops"] > 0 and row["train_flops"] > 0
    # the planned evaluation tokens (2 evaluations of two sets plus the task) were run
    per_token = row["eval_flops"] / row["eval_tokens"]
    assert per_token == pytest.approx(row["train_flops"] / row["train_tokens"] / 3, rel=1e-9)


def test_zero3_cell_scores_the_harness_task_over_its_two_ranks(rows):
    row = rows["llama"]
    assert row["task/mathqa_local/acc"] in {k / 5 for k in range(6)}
    assert row["task/mathqa_local/acc_stderr"] >= 0
    assert row["task/mathqa_local/bpb"] < row["base_task/mathqa_local/bpb"]


def test_architectures_differ_in_shape(rows):
    params = {arch: int(rows[arch]["model_params"]) for arch in CASES}
    assert len(set(params.values())) == 3
    assert all(np.isfinite(rows[arch]["train_loss"]) for arch in CASES)
