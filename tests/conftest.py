"""Shared fixtures: one real local Ray per test session, tiny real demo assets."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault(
    "RAY_AUTH_MODE", "disabled"
)  # explicit: local test clusters run without tokens
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ray_local():
    """A real Ray instance on loopback shared by every test that needs one."""
    import ray

    from cluster.local import connect

    resources = connect(num_cpus=4)
    yield resources
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """A small real demo corpus and a tiny pre-trained base model (seconds to build)."""
    from anneal.base_model import BaseModelConfig
    from anneal.demo import DemoAssets
    from anneal.demo_corpus import DemoCorpusConfig

    assets = DemoAssets(
        cache_dir=tmp_path_factory.mktemp("asset-cache"),
        corpus_config=DemoCorpusConfig(
            math_packages=("mpmath", "sympy"),
            general_packages=("email", "logging", "http", "json", "importlib"),
            max_docs_per_package=300,
            seed_docs=60,
        ),
        base_config=BaseModelConfig(
            vocab_size=512,
            hidden_size=48,
            num_layers=2,
            num_heads=2,
            intermediate_size=96,
            max_positions=128,
            seq_len=64,
            batch_size=16,
            pretrain_tokens=60_000,
            tokenizer_sample_chars=300_000,
        ),
    )
    assets.base_model()
    return assets
