"""Shared fixtures: one real local Ray per test session, tiny real demo assets."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault(
    "RAY_AUTH_MODE", "disabled"
)  # explicit: local test clusters run without tokens
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _caches_under_the_test_run(tmp_path_factory):
    """What the code caches by default under ``~/.cache/annealscale`` (fits, demo assets)
    goes under this run's temporary directory instead: a test never writes to the home
    directory, and fits made by one test (one table, one law) are found by the next."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this run's directory, shared by its workers
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANNEALSCALE_CACHE", str(root / "annealscale-cache"))
        yield


@pytest.fixture(scope="session")
def ray_local():
    """A real Ray instance on loopback shared by every test that needs one."""
    import ray

    from annealscale.cluster.local import connect

    resources = connect(num_cpus=4)
    yield resources
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """A small real demo corpus and a tiny pre-trained base model (seconds to build).

    Under pytest-xdist the workers share one copy (built by whichever gets the lock first)
    in their common temporary directory: the base model's pre-training is CPU-bound, and
    two workers building it at once on a 2-core machine took half a minute each."""
    from filelock import FileLock

    from annealscale.anneal.demo import DemoAssets

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this run's directory, shared by its workers
    with FileLock(str(root / "tiny-assets.lock")):
        assets = DemoAssets.tiny(root / "tiny-assets")
        assets.base_model()
    return assets
