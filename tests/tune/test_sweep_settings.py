"""Sweep settings that need no Ray: concurrency from cluster resources, the storage
layout, retries and trackers in the spec."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from annealscale.core.errors import AnnealscaleError, SpecError
from annealscale.tune.spec import ResourcesSpec, RetrySpec, TrackingSpec, parse_spec
from annealscale.tune.storage import StorageLayout
from annealscale.tune.sweep import max_concurrent_trials
from annealscale.tune.tracking import check_trackers, tracker_callbacks

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"


def test_concurrency_is_bounded_by_cpus_gpus_and_driver_resources():
    cpu = ResourcesSpec(num_workers=1, cpus_per_worker=1)
    assert max_concurrent_trials(8, 0, cpu, 0.25) == 4  # 1 + 0.25 + 0.5 CPU per trial
    gpu = ResourcesSpec(num_workers=2, cpus_per_worker=1, gpus_per_worker=1)
    assert max_concurrent_trials(64, 3, gpu, 0.25) == 1  # 2 GPUs per trial
    pinned = ResourcesSpec(driver_resources={"on_demand": 0.5})
    assert max_concurrent_trials(64, 0, pinned, 0.25, {"on_demand": 1.0}) == 2
    assert max_concurrent_trials(64, 0, pinned, 0.25, {}) == 1  # never 0: Ray says why


def test_defaults_retry_once_at_each_layer_and_track_nothing():
    spec = parse_spec(yaml.safe_load(DEMO.read_text()))
    assert spec.retries == RetrySpec(worker_failures=1, trial_failures=1)
    assert spec.tracking == TrackingSpec()
    assert not (spec.tracking.tensorboard or spec.tracking.mlflow_tracking_uri)
    assert dict(spec.resources.driver_resources) == {}


@pytest.mark.parametrize(
    "section, value, field",
    [
        ("retries", {"trial_failures": -1}, "retries.trial_failures"),
        ("retries", {"worker_falures": 1}, "retries.worker_falures"),
        ("resources", {"driver_resources": {"GPU": 1}}, "resources.driver_resources.GPU"),
        ("resources", {"driver_resources": {"on_demand": 0}}, "resources.driver_resources"),
        ("resources", {"torch_backend": "mpi"}, "resources.torch_backend"),
        ("tracking", {"progress_seconds": 0}, "tracking.progress_seconds"),
    ],
)
def test_bad_sweep_settings_name_the_field(section, value, field):
    data = copy.deepcopy(yaml.safe_load(DEMO.read_text()))
    data[section] = value
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert str(err.value).startswith(field)


def test_storage_layout_by_identity_for_paths_and_uris(tmp_path):
    local = StorageLayout.of(str(tmp_path / "s"))
    assert local.results == f"{tmp_path}/s/results" and local.local_root == tmp_path / "s"
    assert StorageLayout.of(f"file://{tmp_path}/s") == local
    bucket = StorageLayout.of("s3://bucket/sweeps/")
    assert bucket.train == "s3://bucket/sweeps/train"
    assert bucket.tune == "s3://bucket/sweeps/tune"
    assert bucket.local_root != StorageLayout.of("gs://bucket/sweeps").local_root


def test_trackers_missing_packages_fail_before_compute(monkeypatch):
    """mlflow may be installed (the ``annealscale[mlflow]`` extra) and a test cannot
    uninstall it, so the package lookup alone is patched to say it is missing; nothing of
    Ray, torch or DeepSpeed is patched."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name)
    )
    with pytest.raises(AnnealscaleError, match="tracking.mlflow_tracking_uri: the mlflow"):
        check_trackers(TrackingSpec(mlflow_tracking_uri="file:///tmp/mlruns"))


def test_only_the_trackers_switched_on_are_added(monkeypatch):
    from ray.tune.logger import JsonLoggerCallback, TBXLoggerCallback

    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")  # restored afterwards
    off = tracker_callbacks(TrackingSpec(), "exp")
    assert [type(c) for c in off] == [JsonLoggerCallback]
    import os

    assert os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1"  # Tune adds none itself
    on = tracker_callbacks(TrackingSpec(tensorboard=True), "exp")
    assert [type(c) for c in on] == [JsonLoggerCallback, TBXLoggerCallback]
