"""The base model measured once: its bits per byte on both held-out sets, its task scores
and its shape for the FLOP ledger, before any cell anneals.

The measurement is a pure function of the model's files, the evaluation windows, the
tasks and this code, so it is kept under the sweep's cache by a hash of all four: a
resumed, repeated or extended sweep reads it back instead of loading the model on the
driver again (seconds for the demo's model, minutes and all the driver's memory for a
large one). An entry that cannot be read is measured again; entries are written to a
temporary name and renamed (`core.durable`), so two sweeps at once never read half of one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annealscale.anneal.evaluate import bits_per_byte, nll_and_bytes
from annealscale.anneal.flops import ModelShape
from annealscale.anneal.harness import TaskSuite
from annealscale.anneal.model import load_model, model_shape
from annealscale.core import durable
from annealscale.core.hashing import content_hash, source_hash, to_plain
from annealscale.tune.engine_inputs import base_task_scores

log = logging.getLogger(__name__)

_MEASURING_CODE = (
    "annealscale.anneal.evaluate",
    "annealscale.anneal.harness",
    "annealscale.anneal.model",
    "annealscale.tune.engine_inputs",
    __name__,
)


@dataclass(frozen=True, kw_only=True)
class BaseMeasurement:
    """What the sweep needs to know about the base model before annealing."""

    metrics: dict[str, float]
    """``domain`` and ``general`` bits per byte, then every task result column."""
    shape: ModelShape
    task_tokens: int = 0
    """Tokens the tasks ran forward (for each evaluation's FLOPs)."""
    task_columns: tuple[str, ...] = ()
    """Result columns the task suite produces."""


def measure_base(
    *,
    model_path: str,
    trust_remote_code: bool,
    tokenizer,
    windows: Mapping[str, np.ndarray],
    token_bytes: np.ndarray,
    suite: TaskSuite,
    cache_dir: Path,
    model_identity: str,
) -> BaseMeasurement:
    """The base model's measurement on ``windows`` (name -> packed windows) and ``suite``,
    read from ``cache_dir`` when the model ``model_identity`` names (the identity of its
    files, `tune.plans.InputsIdentity.shared`) was measured on the same inputs before."""
    path = (
        Path(cache_dir)
        / f"base-{_key(model_identity, trust_remote_code, windows, token_bytes, suite)}.json"
    )
    try:
        return _from_json(json.loads(path.read_text()))
    except Exception:  # noqa: BLE001 - missing, torn or from another version: measure
        pass
    measured = _measure(model_path, trust_remote_code, tokenizer, windows, token_bytes, suite)
    _write(path, measured)
    return measured


def _measure(model_path, trust_remote_code, tokenizer, windows, token_bytes, suite):
    model = load_model(model_path, trust_remote_code=trust_remote_code)
    metrics = {
        name: bits_per_byte(*nll_and_bytes(model, sets, token_bytes))
        for name, sets in windows.items()
    }
    scored_suite, scores = base_task_scores(model, tokenizer, suite)
    metrics.update(scores.metrics)
    return BaseMeasurement(
        metrics=metrics,
        shape=model_shape(model),
        task_tokens=int(scores.tokens),
        task_columns=tuple(scored_suite.columns),
    )


def _key(model_identity, trust_remote_code, windows, token_bytes, suite) -> str:
    settings = {k: v for k, v in to_plain(suite).items() if k not in ("columns", "cache_dir")}
    digest = hashlib.sha256()
    head = {
        "code": measuring_code_version(),
        "model": model_identity,
        "trust_remote_code": trust_remote_code,
        "suite": settings,
    }
    digest.update(content_hash(head, length=64).encode())
    for name, array in [*sorted(windows.items()), ("token_bytes", token_bytes)]:
        array = np.ascontiguousarray(array)
        digest.update(f"{name}|{array.dtype}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:24]


@functools.cache
def measuring_code_version() -> str:
    """Hash of the code that loads and evaluates the model: a change to it measures anew."""
    return source_hash(Path(importlib.import_module(name).__file__) for name in _MEASURING_CODE)


def _from_json(data: dict) -> BaseMeasurement:
    return BaseMeasurement(
        metrics={k: float(v) for k, v in data["metrics"].items()},
        shape=ModelShape(**data["shape"]),
        task_tokens=int(data["task_tokens"]),
        task_columns=tuple(data["task_columns"]),
    )


def _write(path: Path, measured: BaseMeasurement) -> None:
    text = json.dumps(dataclasses.asdict(measured), sort_keys=True)
    try:
        durable.write_bytes(path, text.encode())
    except OSError as err:  # a read-only or full cache costs the next sweep time, not this one
        log.warning(
            "base model measurement not kept in %s (%s); the next sweep measures it again: "
            "make that folder writable to keep it",
            path.parent,
            err,
        )
