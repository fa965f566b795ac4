"""The base model is measured once per model and evaluation inputs: a second sweep (a
resume, a rerun, a wider grid) reads the kept measurement instead of loading the model on
the driver again; other inputs are measured anew, and a torn entry is measured again.

A real tiny Llama is measured. To show the model is not loaded, the loader is replaced
by one that fails (a spy, not a stand-in: every measurement here is real).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from annealscale.anneal.harness import TaskSuite
from annealscale.tune import base_measurement
from annealscale.tune.base_measurement import measure_base
from tests.helpers import save_tiny_llama


class Loaded(Exception):
    pass


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    return {
        "model_path": save_tiny_llama(tmp_path / "model"),
        "trust_remote_code": False,
        "tokenizer": None,  # no tasks: only the bits per byte need measuring
        "windows": {
            "domain": rng.integers(1, 97, (4, 17)),
            "general": rng.integers(1, 97, (4, 17)),
        },
        "token_bytes": np.ones(97, dtype=np.int64),
        "suite": TaskSuite(),
        "cache_dir": tmp_path / "cache",
        "model_identity": "model-files-1",
    }


def _no_loading(monkeypatch):
    def load_model(*args, **kwargs):
        raise Loaded

    monkeypatch.setattr(base_measurement, "load_model", load_model)


def test_a_second_sweep_reads_the_measurement_and_does_not_load_the_model(inputs, monkeypatch):
    first = measure_base(**inputs)
    assert set(first.metrics) == {"domain", "general"}
    assert all(np.isfinite(v) and v > 0 for v in first.metrics.values())
    assert first.shape.n_layer == 2 and first.shape.d_model == 64
    assert first.shape.non_embedding_params > 0

    _no_loading(monkeypatch)
    assert measure_base(**inputs) == first


@pytest.mark.parametrize(
    "change",
    [
        {"model_identity": "model-files-2"},  # the model's files changed
        {"windows": "other"},  # another evaluation set
        {"suite": TaskSuite(limit=5)},  # the tasks' settings (even with no tasks)
    ],
)
def test_other_inputs_are_measured_anew(inputs, monkeypatch, change):
    measure_base(**inputs)
    if change.get("windows") == "other":
        change = {"windows": {**inputs["windows"], "domain": inputs["windows"]["domain"][:2]}}
    _no_loading(monkeypatch)
    with pytest.raises(Loaded):
        measure_base(**{**inputs, **change})


def test_a_torn_entry_is_measured_again_and_kept_whole(inputs):
    first = measure_base(**inputs)
    (entry,) = inputs["cache_dir"].glob("base-*.json")
    entry.write_text(entry.read_text()[:20])
    assert measure_base(**inputs) == first
    assert json.loads(entry.read_text())["metrics"] == first.metrics
