"""Specs for end-to-end sweeps, with every path resolved to the tiny demo assets so that a
sweep started in a subprocess (the CLI) uses the same files as one run in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from annealscale.cluster.local import LOCAL_TRAIN_ENV

REPO = Path(__file__).resolve().parents[2]


def sweep_spec(
    resolve, storage, *, name="e2e", sources=None, spends=(0.05,), tokens=(4096,), seeds=(0,)
):
    """A tiny spec as a mapping; ``sources`` default to one licensed textbook source."""
    sources = sources or [
        {
            "name": "textbook",
            "kind": "as_is",
            "params": {"path": resolve("demo:math_train"), "usd_per_token": 1e-5},
        }
    ]
    return {
        "name": name,
        "base_model": {"path": resolve("demo:base")},
        "replay": {"path": resolve("demo:general_train")},
        "eval": {
            "domain": {"path": resolve("demo:math_eval")},
            "general": {"path": resolve("demo:general_eval")},
            "max_tokens": 4096,
        },
        "sources": sources,
        "grid": {
            "curation_spend": list(spends),
            "train_tokens": list(tokens),
            "seeds": list(seeds),
        },
        "domain_fraction": 0.5,
        "schedule": {"peak_lr": 2e-3, "warmup_fraction": 0.1},
        "train": {"seq_len": 64, "batch_size": 16, "micro_batch_size": 8, "zero_stage": 1},
        "prices": {"usd_per_pflop": 500.0},
        "storage_path": str(storage),
    }


def write_spec(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli_env(tmp_path: Path) -> dict:
    """Environment of a CLI subprocess: this checkout first, offline, no Ray tokens."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(
        RAY_AUTH_MODE="disabled",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        ANNEALSCALE_CACHE=str(tmp_path / "cli-cache"),  # every demo: path is already resolved
    )
    env.pop("RAY_ADDRESS", None)
    # a test cluster started from this environment is as local as `connect`'s instance
    env.update({k: env.get(k, v) for k, v in LOCAL_TRAIN_ENV.items()})
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "annealscale.cluster.cli", *args]


def run_cli(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli(*args), env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def resolve(tiny_assets):
    return tiny_assets.resolve


@pytest.fixture
def tools():
    """The helpers above, for test modules (conftest modules are not importable)."""
    import types

    return types.SimpleNamespace(
        spec=sweep_spec, write=write_spec, env=cli_env, cli=cli, run=run_cli, repo=REPO
    )
