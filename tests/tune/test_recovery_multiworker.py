"""Fault tests with two data-parallel workers under ZeRO-3 in bf16 on a real local Ray.

- One Train worker process SIGKILLed after a checkpoint: Ray Train restarts the group from
  it, and the cell ends where an uninterrupted run of it ends (same tokens, same losses
  within the noise of bf16 reductions in a different order).
- The cell's Tune trial process (which runs Ray Train's controller) SIGKILLed instead:
  Tune retries the trial, whose new Train run resumes from the same checkpoint. The dead
  controller's placement group must be freed for that (`tune.orphans`): a local Ray has no
  dashboard for Ray Train's own cleaner, and the retry waited for ever before.

The exact-loss property of the engine alone (ZeRO-2 and ZeRO-3, no Ray) is
`tests/anneal/test_multiworker_engine.py`."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from annealscale.tune.spec import parse_spec
from annealscale.tune.sweep import run_sweep
from tests.helpers import sweep_spec
from tests.tune.test_recovery import WorkerKiller

pytestmark = pytest.mark.slow

STEPS = 16
EVERY = 4
TOKENS_PER_STEP = 8 * 64


@pytest.fixture(scope="module")
def runs(ray_local, tiny_assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("recovery-2w")
    storage = root / "storage"
    spec = parse_spec(
        sweep_spec(
            str(storage),
            name="recovery-2w",
            grid={"curation_spend": [0.2], "train_tokens": [STEPS * TOKENS_PER_STEP]},
            train={
                "seq_len": 64,
                "batch_size": 8,
                "micro_batch_size": 2,
                "zero_stage": 3,
                "precision": "bf16",
            },
            resources={"num_workers": 2},
            checkpoint={"every_steps": EVERY},
        )
    )
    results = {}
    victims = {"killed": ("RayTrainWorker",), "trial_killed": ("ImplicitFunc",)}
    for name in ("uninterrupted", *victims):
        for runs_dir in ("train", "tune", "results"):
            shutil.rmtree(storage / runs_dir, ignore_errors=True)
        killer = None
        if name in victims:
            killer = WorkerKiller(storage / "train", after=1, actor_classes=victims[name])
            killer.start()
        outcome = run_sweep(spec, root / name, resolve=tiny_assets.resolve)
        if killer is not None:
            killer.stop.set()
            killer.join()
        results[name] = (outcome, pd.read_parquet(outcome.results_path), killer)
    return results


def _finished_after_the_kill(runs, name: str):
    """The reference row and the row of run ``name``, once its kill and finish are checked."""
    _, reference, _ = runs["uninterrupted"]
    outcome, killed, killer = runs[name]
    assert killer.error is None, killer.error
    assert killer.killed_pid is not None, f"nothing was killed in the {name} run"
    assert outcome.finished == 1 and outcome.failed == 0
    ref, got = reference.iloc[0], killed.iloc[0]
    assert EVERY <= got["resumed_from_step"] < STEPS
    assert got["train_tokens"] == ref["train_tokens"] == STEPS * TOKENS_PER_STEP
    assert got["domain_bpb"] == pytest.approx(ref["domain_bpb"], rel=0.02)
    assert got["general_bpb"] == pytest.approx(ref["general_bpb"], rel=0.02)
    return ref, got


def test_two_zero3_bf16_workers_resume_to_the_uninterrupted_losses(runs):
    ref, got = _finished_after_the_kill(runs, "killed")
    assert got["worker_restarts"] == 1 and ref["worker_restarts"] == 0
    assert got["domain_tokens"] == ref["domain_tokens"]
    assert got["train_loss"] == pytest.approx(ref["train_loss"], rel=0.02)


def test_a_killed_trial_process_is_retried_and_resumes_to_the_same_losses(runs):
    _, got = _finished_after_the_kill(runs, "trial_killed")
    assert got["attempts"] == 2  # one Tune retry
