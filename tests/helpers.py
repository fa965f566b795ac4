"""Test and benchmark helpers shared across files (importable as ``tests.helpers``: the
repository root is on ``sys.path`` through pytest's ``pythonpath`` setting)."""

from __future__ import annotations

import copy
from typing import Any

TEXTBOOK = {
    "name": "textbook",
    "kind": "as_is",
    "params": {"path": "demo:math_train", "usd_per_token": 1e-5},
}
"""The demo's per-token source: cheap to curate, so a sweep's time goes to its anneals."""

TOKENS_PER_STEP = 8 * 64
"""Tokens per optimizer step of `sweep_spec`'s default ``train`` section."""


def sweep_spec(storage: str, **sections: Any) -> dict:
    """A small sweep on the tiny demo assets, as a spec mapping: one source, one spend, one
    budget of 4 optimizer steps, linear schedule, 64-token windows, batches of 8.

    Each keyword replaces one top-level section whole (``grid=``, ``schedule=``,
    ``sources=``...), so a test states exactly what it varies.
    """
    spec = {
        "name": "one-cell",
        "base_model": {"path": "demo:base"},
        "replay": {"path": "demo:general_train"},
        "eval": eval_section(2048),
        "sources": [copy.deepcopy(TEXTBOOK)],
        "grid": {"curation_spend": [0.2], "train_tokens": [4 * TOKENS_PER_STEP]},
        "domain_fraction": 0.5,
        "schedule": {"peak_lr": 2e-3, "warmup_fraction": 0.05},
        "train": {"seq_len": 64, "batch_size": 8, "micro_batch_size": 8, "zero_stage": 1},
        "prices": {"usd_per_pflop": 500.0},
        "storage_path": storage,
    }
    return {**spec, **sections}


def eval_section(max_tokens: int) -> dict:
    """The demo's held-out sets, evaluated on ``max_tokens`` tokens each."""
    return {
        "domain": {"path": "demo:math_eval"},
        "general": {"path": "demo:general_eval"},
        "max_tokens": max_tokens,
    }


def write_math_task(root, name: str = "mathqa_local", questions: int = 12, *, data=True):
    """A small lm-eval multiple-choice task on the demo's math domain, written under
    ``root``: ``<name>.yaml`` (``dataset_path: json``, an absolute ``data_files``) and
    ``<name>.jsonl`` of linear equations in the synthetic math documents' wording. Returns
    the directory to give as ``include_path``; ``data=False`` leaves the JSONL out."""
    import json
    import random
    from pathlib import Path

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{name}-{questions}")
    rows = []
    for _ in range(questions):
        a, x, b = rng.randint(2, 12), rng.randint(-20, 20), rng.randint(-30, 30)
        wrong = sorted({x + 1, x - 2, -x if x else 7, x * 2 if x else 3} - {x})[:3]
        choices = [str(c) for c in [x, *wrong]]
        rng.shuffle(choices)
        rows.append(
            {
                "question": f"Solve the linear equation {a}*x + {b} = {a * x + b} for x.",
                "choices": choices,
                "answer": choices.index(str(x)),
            }
        )
    data_file = root / f"{name}.jsonl"
    if data:
        data_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files:\n    test: {data_file}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}\\nDivide both sides:"\n'
        "doc_to_choice: choices\n"
        "doc_to_target: answer\n"
        "metric_list:\n"
        "  - metric: acc\n"
        "  - metric: acc_norm\n"
    )
    return root


def save_tiny_llama(path, **config) -> str:
    """Save a two-layer bf16 Llama (vocabulary 97, hidden 64, seeded) at ``path``; extra
    ``config`` fields override the defaults. Returns the path as a string."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    fields = {
        "vocab_size": 97,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        **config,
    }
    LlamaForCausalLM(LlamaConfig(**fields)).to(torch.bfloat16).save_pretrained(path)
    return str(path)


def moto_s3(bucket: str):
    """A real pyarrow S3 filesystem on ``bucket``, served by moto's S3-compatible server on
    a free loopback port (no cloud is reachable here; the client path is pyarrow's own).
    Returns (filesystem, port, stop); skips when the dev extra is missing."""
    import socket

    import pyarrow.fs as pafs
    import pytest

    moto_server = pytest.importorskip("moto.server", reason="dev extra: moto[server]")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    fs = pafs.S3FileSystem(
        access_key="test",
        secret_key="test",
        endpoint_override=f"127.0.0.1:{port}",
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    fs.create_dir(bucket)
    return fs, port, server.stop


def start_cluster(script: str, env: dict):
    """Run ``script`` (a `ray.cluster_utils.Cluster` driven over stdin and stdout) in its
    own Python process, so a test can add or remove nodes while a CLI sweep runs on it."""
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def stop_cluster(cluster) -> None:
    """Close the cluster process's stdin (its cue to shut the cluster down) and wait for
    it; kill it after a minute."""
    import subprocess

    cluster.stdin.close()
    try:
        cluster.wait(timeout=60)
    except subprocess.TimeoutExpired:
        cluster.kill()


def exited_pid() -> int:
    """The process id of a process that has just exited (and been reaped)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)
