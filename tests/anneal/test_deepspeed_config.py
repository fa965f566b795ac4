"""DeepSpeed configuration from the spec, and a user's JSON validated against DeepSpeed's
own models (no Ray needed: these run before any compute)."""

from __future__ import annotations

import json

import pytest

from annealscale.anneal.deepspeed_config import deepspeed_config, load_user_config, uses_bf16
from annealscale.anneal.run_spec import TrainSpec
from annealscale.core.errors import AnnealscaleError, SpecError
from annealscale.core.spec_model import from_mapping


def _train(**fields) -> TrainSpec:
    return from_mapping(TrainSpec, {"batch_size": 32, "micro_batch_size": 4, **fields})


def test_spec_builds_batches_accumulation_clipping_stage_and_precision():
    config = deepspeed_config(_train(zero_stage=3, grad_clip=0.5), world_size=2, bf16=True)
    assert config["train_batch_size"] == 32
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 4  # 32 / (4 x 2)
    assert config["gradient_clipping"] == 0.5
    assert config["zero_optimization"] == {"stage": 3}
    assert config["bf16"] == {"enabled": True}
    assert "optimizer" not in config and config["zero_allow_untested_optimizer"]


def test_precision_is_fp32_on_cpu_and_bf16_on_gpu_unless_fp32_is_asked_for():
    assert not uses_bf16(_train(), use_gpu=False)
    assert uses_bf16(_train(precision="bf16"), use_gpu=False)  # DeepSpeed CPU bf16
    assert uses_bf16(_train(), use_gpu=True)
    assert not uses_bf16(_train(precision="fp32"), use_gpu=True)


def test_spec_optimizer_is_built_with_its_betas_eps_and_weight_decay():
    import torch

    from annealscale.anneal.deepspeed_config import build_optimizer

    train = _train(optimizer={"betas": [0.8, 0.9], "eps": 1e-6}, weight_decay=0.05)
    optimizer = build_optimizer(train, [torch.nn.Parameter(torch.zeros(2))], peak_lr=1e-3)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (
        1e-3,
        (0.8, 0.9),
        1e-6,
        0.05,
    )


@pytest.mark.parametrize(
    ("fields", "path", "words"),
    [
        ({"zero_stgae": 2}, "zero_stgae", "did you mean 'zero_stage'"),
        ({"optimizer": {"beta": [0.9, 0.95]}}, "optimizer.beta", "did you mean 'betas'"),
        ({"optimizer": {"betas": [0.9, 1.5]}}, "optimizer.betas", "[0, 1)"),
        ({"optimizer": {"name": "lion"}}, "optimizer.name", "'adamw'"),
        ({"zero_stage": 4}, "zero_stage", "0, 1, 2 or 3"),
    ],
)
def test_a_typo_in_the_spec_train_section_names_the_field(fields, path, words):
    with pytest.raises(SpecError) as err:
        from_mapping(TrainSpec, fields, "train")
    message = str(err.value)
    assert message.startswith(f"train.{path}: ") and words in message
    assert "\n" not in message


def _user(tmp_path, data) -> str:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize(
    ("data", "where", "words"),
    [
        ({"zero_optimization": {"stage": 2, "overlap_com": True}}, "zero_optimization.overlap_com",
         "did you mean 'overlap_comm'"),
        ({"zero_optimization": {"stage": "two"}}, "zero_optimization.stage", "'two'"),
        ({"gradient_cliping": 1.0}, "gradient_cliping", "did you mean 'gradient_clipping'"),
        ({"bf16": {"enabeld": True}}, "bf16.enabeld", "did you mean 'enabled'"),
        ({"scheduler": {"type": "WarmupLR"}}, "scheduler", "schedule section"),
        ({"optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}, "optimizer.params.lr",
         "schedule.peak_lr"),
    ],
)  # fmt: skip
def test_a_bad_field_in_a_user_json_is_one_line_naming_file_and_field(tmp_path, data, where, words):
    path = _user(tmp_path, data)
    with pytest.raises(AnnealscaleError) as err:
        load_user_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {where}: ") and words in message
    assert "\n" not in message


def test_user_json_batch_sizes_must_agree_with_the_spec(tmp_path):
    path = _user(tmp_path, {"train_batch_size": 64, "gradient_accumulation_steps": 4})
    user = load_user_config(path)
    with pytest.raises(AnnealscaleError, match=rf"^{path}: train_batch_size: 64 disagrees"):
        deepspeed_config(_train(), world_size=2, bf16=False, user=user, source=path)
    agreeing = {"train_batch_size": 32, "gradient_accumulation_steps": 4}
    config = deepspeed_config(_train(), world_size=2, bf16=False, user=agreeing, source=path)
    assert config["train_micro_batch_size_per_gpu"] == 4


def test_user_json_wins_where_it_speaks_and_the_spec_fills_the_rest(tmp_path):
    user = load_user_config(
        _user(
            tmp_path,
            {
                "zero_optimization": {"stage": 2, "overlap_comm": True},
                "gradient_clipping": 0.25,
                "optimizer": {"type": "AdamW", "params": {"betas": [0.9, 0.99]}},
            },
        )
    )
    config = deepspeed_config(
        _train(zero_stage=1, grad_clip=1.0), world_size=1, bf16=False, user=user, peak_lr=2e-3
    )
    assert config["zero_optimization"] == {"stage": 2, "overlap_comm": True}
    assert config["gradient_clipping"] == 0.25
    assert config["optimizer"]["params"] == {"betas": [0.9, 0.99], "lr": 2e-3}
    assert config["gradient_accumulation_steps"] == 8
    assert config["bf16"] == {"enabled": False}
    assert "zero_allow_untested_optimizer" not in config


def test_missing_or_invalid_json_file_is_named(tmp_path):
    with pytest.raises(AnnealscaleError, match=r"^train.deepspeed_config: '.*nope.json' is not"):
        load_user_config(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AnnealscaleError, match=r"bad.json: not valid JSON \(line 1\)"):
        load_user_config(str(bad))


def test_optimizer_offload_hands_the_spec_optimizer_to_deepspeed():
    config = deepspeed_config(
        _train(offload_optimizer=True, zero_stage=3), world_size=1, bf16=True, peak_lr=1e-3
    )
    assert config["zero_optimization"]["offload_optimizer"] == {"device": "cpu"}
    assert config["optimizer"]["type"] == "AdamW"
    assert config["optimizer"]["params"]["lr"] == 1e-3
    assert "zero_allow_untested_optimizer" not in config
    plain = deepspeed_config(_train(zero_stage=3), world_size=1, bf16=True, peak_lr=1e-3)
    assert "offload_optimizer" not in plain["zero_optimization"] and "optimizer" not in plain
