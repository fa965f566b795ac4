"""The sweep's peak checkpoint storage, estimated before it runs (`tune.storage_plan`),
and printed by ``annealscale validate``."""

from __future__ import annotations

import re

import pytest
import yaml

from annealscale.cluster.cli import main
from annealscale.tune.spec import parse_spec
from annealscale.tune.storage_plan import checkpoint_bytes, model_params, sweep_peak
from tests.helpers import TOKENS_PER_STEP, sweep_spec

EIGHT_B = 8_030_261_248  # Llama 3 8B


def test_an_8b_checkpoint_is_96_to_112_gb():
    zero3 = checkpoint_bytes(EIGHT_B, zero_stage=3, mixed_precision=True)
    zero1 = checkpoint_bytes(EIGHT_B, zero_stage=1, mixed_precision=True)
    assert zero3 / 1e9 == pytest.approx(96, rel=0.01)
    assert zero1 / 1e9 == pytest.approx(112, rel=0.01)
    assert checkpoint_bytes(EIGHT_B, 2, True) == zero1  # ZeRO-2 writes what ZeRO-1 does
    assert checkpoint_bytes(EIGHT_B, 0, False) == 12 * EIGHT_B  # fp32 weights + m, v


def _spec(**sections):
    grid = {"curation_spend": [0.2, 0.4], "train_tokens": [8 * TOKENS_PER_STEP], "seeds": [0, 1]}
    return parse_spec(sweep_spec("s", grid=grid, **sections))  # 4 cells


def test_peak_counts_running_cells_and_what_retention_keeps():
    periodic = {"every_steps": 2, "keep": 2}
    running = {"max_concurrent_trials": 2}
    default = sweep_peak(_spec(checkpoint=periodic, resources=running), params=1000)
    assert (default.running, default.finished, default.trunks) == (6, 0, 0)  # 2 x (2 + 1)
    final = sweep_peak(
        _spec(checkpoint=periodic, resources=running, retention={"keep_final": True}), 1000
    )
    assert final.finished == 4 and final.checkpoints == 10
    hoard = sweep_peak(
        _spec(checkpoint=periodic, resources=running, retention={"delete_checkpoints": False}),
        1000,
    )
    assert hoard.finished == 8  # keep 2 for every finished cell
    assert hoard.peak_bytes == hoard.checkpoints * 12 * 1000  # fp32 on CPU: 12 B/param
    assert sweep_peak(_spec(), params=None).peak_bytes is None


def test_wsd_trunks_count_every_branch_point():
    grid = {
        "curation_spend": [0.2],
        "train_tokens": [8 * TOKENS_PER_STEP, 16 * TOKENS_PER_STEP],
        "seeds": [0],
    }
    schedule = {"kind": "wsd", "peak_lr": 2e-3, "warmup_steps": 2, "cooldown_fraction": 0.25}
    spec = parse_spec(sweep_spec("s", grid=grid, schedule=schedule))
    assert sweep_peak(spec, 1000).trunks == 2  # one trunk, two branch points


def test_model_params_from_the_config_alone(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from annealscale.anneal.memory_plan import model_dims

    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    config.save_pretrained(tmp_path / "model")  # no weights on disk
    expected = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    assert model_params(str(tmp_path / "model")) == expected
    # one count of a model's size: the memory planner's
    assert model_dims(config).params == expected
    assert model_params("demo:base") is None


def test_validate_prints_the_peak_storage(tmp_path, capsys):
    from transformers import LlamaConfig

    LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2
    ).save_pretrained(tmp_path / "model")
    data = sweep_spec(str(tmp_path / "storage"), checkpoint={"every_steps": 1, "keep": 1})
    data["base_model"] = {"path": str(tmp_path / "model")}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("peak storage:"))
    assert re.match(r"peak storage: [\d.,]+ GB = 2 checkpoints \(2 running", line), line
