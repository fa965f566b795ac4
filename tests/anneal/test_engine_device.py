"""A worker given GPUs that cannot use CUDA stops with one line; which workers must find
CUDA, and when activation checkpointing turns on, is decided from the spec."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from annealscale.anneal.engine import prepare_threads
from annealscale.tune.prepare import execution_settings
from annealscale.tune.spec import parse_spec
from tests.helpers import sweep_spec


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine can use CUDA")
def test_worker_given_gpus_without_cuda_stops_with_one_line(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(RuntimeError) as err:
        prepare_threads(1, expect_cuda=True)
    message = str(err.value)
    assert "\n" not in message
    assert socket.gethostname() in message
    assert "CUDA_VISIBLE_DEVICES=0,1" in message
    assert torch.__version__ in message


def _spec(tmp_path, resources: dict, train: dict | None = None):
    data = sweep_spec(str(tmp_path / "storage"), resources=resources)
    if train:
        data["train"] = {**data["train"], **train}
        data["grid"]["train_tokens"] = [data["train"]["batch_size"] * data["train"]["seq_len"]]
    return parse_spec(data)


def test_only_real_gpus_must_find_cuda(tmp_path):
    cpu = execution_settings(_spec(tmp_path, {}), "unused")
    logical = execution_settings(
        _spec(tmp_path, {"gpus_per_worker": 1, "torch_backend": "gloo"}), "unused"
    )
    real = execution_settings(_spec(tmp_path, {"gpus_per_worker": 1}), "unused")
    assert not cpu["expect_cuda"] and not logical["expect_cuda"] and real["expect_cuda"]
    assert cpu["peak_flops"] == 0.0 and not cpu["activation_checkpointing"]


def test_checkpointing_follows_the_plan_when_unset(tmp_path):
    from tests.anneal.test_memory_plan import LLAMA3_8B

    model = tmp_path / "llama3-8b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(LLAMA3_8B))
    node = {"num_workers": 8, "gpus_per_worker": 1, "gpu_kind": "h100-80gb"}
    long = {"seq_len": 4096, "batch_size": 64, "micro_batch_size": 8, "zero_stage": 3}
    short = {**long, "micro_batch_size": 1}
    needed = execution_settings(_spec(tmp_path, node, long), str(model))
    not_needed = execution_settings(_spec(tmp_path, node, short), str(model))
    forced_off = execution_settings(
        _spec(tmp_path, node, {**long, "activation_checkpointing": False}), str(model)
    )
    assert needed["activation_checkpointing"] and not not_needed["activation_checkpointing"]
    assert not forced_off["activation_checkpointing"]
    assert needed["peak_flops"] == pytest.approx(989e12)
