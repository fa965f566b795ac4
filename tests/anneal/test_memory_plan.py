"""The memory planner: the 16 bytes per parameter arithmetic, and `annealscale validate`
on the published configurations of Llama-3-8B, Llama-3-70B and Qwen2.5-7B written as
config.json files (no weights: the model is built on the meta device)."""

from __future__ import annotations

import json

import pytest
import yaml

from annealscale.anneal.memory_plan import (
    GIB,
    ModelDims,
    TrainSetup,
    cheapest_fix,
    model_state_bytes,
    plan,
)
from annealscale.cluster.cli import main
from tests.helpers import sweep_spec

LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "torch_dtype": "bfloat16",
}
LLAMA3_70B = {
    **LLAMA3_8B,
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
}
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 131072,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "use_sliding_window": False,
    "torch_dtype": "bfloat16",
}

DIMS = ModelDims(
    params=1_000_000_000,
    n_layer=16,
    d_model=2048,
    d_ff=8192,
    n_heads=16,
    n_kv_heads=16,
    vocab_size=32000,
)


def _setup(**changes) -> TrainSetup:
    base = dict(
        zero_stage=0,
        bf16=True,
        micro_batch_size=1,
        seq_len=2048,
        activation_checkpointing=False,
        offload_optimizer=False,
        gpus=1,
        gpu_memory_bytes=80 * GIB,
    )
    return TrainSetup(**{**base, **changes})


@pytest.mark.parametrize("bf16", [True, False])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("gpus", [1, 4, 8])
def test_model_states_are_16_bytes_per_parameter_split_by_stage(stage, gpus, bf16):
    params = 1_000_000
    parameters, gradients, optimizer = model_state_bytes(
        params, _setup(zero_stage=stage, gpus=gpus, bf16=bf16)
    )
    # the distinct bytes: a partitioned part times the GPUs, a replicated part once
    shards = [gpus if stage >= k else 1 for k in (3, 2, 1)]
    distinct = sum(b * n for b, n in zip((parameters, gradients, optimizer), shards, strict=True))
    assert distinct == pytest.approx(16 * params)
    per_gpu = parameters + gradients + optimizer
    weight = 2 if bf16 else 4
    expected = {
        0: 16 * params,
        1: 2 * weight * params + (16 - 2 * weight) * params / gpus,
        2: weight * params + (16 - weight) * params / gpus,
        3: 16 * params / gpus,
    }[stage]
    assert per_gpu == pytest.approx(expected)


def test_offload_takes_the_optimizer_states_off_the_gpu():
    on = model_state_bytes(10**6, _setup(zero_stage=2, gpus=4))
    off = model_state_bytes(10**6, _setup(zero_stage=2, gpus=4, offload_optimizer=True))
    assert off[2] == 0 and on[2] == pytest.approx(12 * 10**6 / 4)
    assert off[:2] == on[:2]


def test_checkpointing_and_smaller_micro_batches_shrink_activations():
    full = plan(DIMS, _setup(micro_batch_size=8))
    checkpointed = plan(DIMS, _setup(micro_batch_size=8, activation_checkpointing=True))
    smaller = plan(DIMS, _setup(micro_batch_size=4))
    assert checkpointed.activations < full.activations / 4
    assert smaller.activations == pytest.approx(full.activations / 2)


def test_fix_raises_the_stage_when_that_suffices():
    # 1B parameters on 8 GPUs of 16 GiB: ZeRO-0 holds 16 GB of states, ZeRO-2 ~3.4 GB
    setup = _setup(gpus=8, gpu_memory_bytes=16 * GIB, seq_len=512)
    assert not plan(DIMS, setup).fits
    fix = cheapest_fix(DIMS, setup)
    assert fix.startswith("raise train.zero_stage to ")
    stage = int(fix.rsplit(" ", 1)[1])
    assert plan(DIMS, _setup(gpus=8, gpu_memory_bytes=16 * GIB, seq_len=512, zero_stage=stage)).fits


def _spec(tmp_path, config: dict, *, gpus: int, stage: int, **train) -> str:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps(config))
    data = sweep_spec(str(tmp_path / "storage"))
    data["base_model"] = {"path": str(model)}
    data["train"] = {
        "seq_len": 4096,
        "batch_size": 64,
        "micro_batch_size": 1,
        "zero_stage": stage,
        **train,
    }
    data["grid"]["train_tokens"] = [64 * 4096 * 10]
    data["resources"] = {
        "num_workers": gpus,
        "gpus_per_worker": 1,
        "gpu_kind": "h100-80gb",
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_llama3_8b_on_one_80gb_gpu_is_refused_with_a_fix(tmp_path, capsys, stage):
    assert main(["validate", _spec(tmp_path, LLAMA3_8B, gpus=1, stage=stage)]) == 2
    captured = capsys.readouterr()
    assert "does not fit" in captured.out and "8.03B parameters" in captured.out
    assert captured.err.count("\n") == 1
    assert "GPUs per cell" in captured.err or "offload_optimizer" in captured.err


def test_llama3_8b_on_one_8x80gb_node_is_accepted_at_zero3(tmp_path, capsys):
    assert main(["validate", _spec(tmp_path, LLAMA3_8B, gpus=8, stage=3)]) == 0
    out = capsys.readouterr().out
    assert "ZeRO-3" in out and "(fits;" in out


def test_llama3_70b_on_one_node_is_refused_naming_the_nodes_needed(tmp_path, capsys):
    assert main(["validate", _spec(tmp_path, LLAMA3_70B, gpus=8, stage=3)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert " nodes of 8 GPUs per cell" in err
    nodes = int(err.split(" nodes of 8 GPUs")[0].rsplit(" ", 1)[1])
    # 16 bytes per parameter alone need 70.6e9 * 16 / 80 GiB > 13 GPUs: at least 2 nodes
    assert nodes >= 2


def test_llama3_70b_with_offload_is_judged_without_refusal_advice_for_nodes(tmp_path, capsys):
    path = _spec(tmp_path, LLAMA3_70B, gpus=8, stage=3, offload_optimizer=True)
    code = main(["validate", path])
    out = capsys.readouterr().out
    assert "optimizer offload" in out
    assert code == 0


def test_qwen25_7b_plan_counts_its_parameters(tmp_path, capsys):
    assert main(["validate", _spec(tmp_path, QWEN25_7B, gpus=8, stage=3)]) == 0
    out = capsys.readouterr().out
    assert "7.62B parameters" in out


def test_auto_checkpointing_turns_on_only_when_needed(tmp_path, capsys):
    main(["validate", _spec(tmp_path, LLAMA3_8B, gpus=8, stage=3)])
    assert "activation checkpointing off" in capsys.readouterr().out
    main(["validate", _spec(tmp_path, LLAMA3_8B, gpus=8, stage=3, micro_batch_size=8)])
    assert "activation checkpointing on" in capsys.readouterr().out


def test_cpu_spec_prints_no_plan(tmp_path, capsys):
    path = _spec(tmp_path, LLAMA3_8B, gpus=1, stage=0)
    data = yaml.safe_load(open(path))
    data["resources"] = {}
    open(path, "w").write(yaml.safe_dump(data))
    assert main(["validate", path]) == 0
    assert "memory plan" not in capsys.readouterr().out


def test_unreadable_model_config_skips_the_plan(tmp_path, capsys):
    path = _spec(tmp_path, LLAMA3_8B, gpus=1, stage=0)
    data = yaml.safe_load(open(path))
    # a hub id (no local folder; validate never downloads): the plan is skipped, not failed
    data["base_model"] = {"path": "hub-org/not-cached-here"}
    open(path, "w").write(yaml.safe_dump(data))
    assert main(["validate", path]) == 0
    assert "memory plan: skipped (base_model.path" in capsys.readouterr().out
