"""WSD trunk branching: the spec's schedule fields, which segment a cell trains, the
planned saving of the demo, and a real sweep on local Ray whose two budgets share one
trunk trained once (each cooldown scored on an lm-eval task)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from annealscale.cluster.cli import EXAMPLES
from annealscale.core.errors import SpecError
from annealscale.tune.spec import load_spec, parse_spec
from annealscale.tune.sweep import run_sweep
from annealscale.tune.trunks import next_segment, planned_train_steps, read_catalog
from tests.helpers import TOKENS_PER_STEP, sweep_spec, write_math_task


def wsd_spec(storage: str, budgets_steps=(10, 20), **schedule) -> dict:
    return sweep_spec(
        storage,
        name="trunks",
        grid={
            "curation_spend": [0.2],
            "train_tokens": [s * TOKENS_PER_STEP for s in budgets_steps],
        },
        schedule={
            "kind": "wsd",
            "peak_lr": 2e-3,
            "warmup_steps": 2,
            "cooldown_fraction": 0.2,
            **schedule,
        },
        resources={"max_concurrent_trials": 2},
    )


def test_wsd_spec_fields_validate():
    spec = parse_spec(wsd_spec("s", cooldown_shape="1-sqrt"))
    assert spec.schedule.kind == "wsd" and spec.schedule.cooldown_shape == "1-sqrt"
    with pytest.raises(SpecError, match=r"schedule\.cooldown_fraction: must be in \(0, 1\)"):
        parse_spec(wsd_spec("s", cooldown_fraction=1.0))
    with pytest.raises(SpecError, match=r"schedule\.cooldown_shape: got 'cosine'"):
        parse_spec(wsd_spec("s", cooldown_shape="cosine"))
    # the warmup must end before the smallest budget's cooldown starts (step 8 of 10)
    with pytest.raises(SpecError, match=r"schedule\.warmup_steps: 9 warmup steps do not end"):
        parse_spec(wsd_spec("s", warmup_steps=9))
    linear = wsd_spec("s")
    linear["schedule"] = {"kind": "linear", "peak_lr": 1e-3, "warmup_steps": 3}
    with pytest.raises(SpecError, match=r"schedule\.warmup_steps: applies to kind wsd only"):
        parse_spec(linear)


def test_checkpoint_interval_in_steps_or_tokens():
    data = wsd_spec("s")
    data["checkpoint"] = {"every_tokens": 5 * 512 + 100}
    assert parse_spec(data).checkpoint.interval_steps(512) == 5
    data["checkpoint"] = {"every_steps": 3}
    assert parse_spec(data).checkpoint.interval_steps(512) == 3
    assert parse_spec(wsd_spec("s")).checkpoint.interval_steps(512) == 0
    data["checkpoint"] = {"every_steps": 3, "every_tokens": 1000}
    with pytest.raises(SpecError, match=r"checkpoint\.every_steps: give every_steps or"):
        parse_spec(data)
    data["checkpoint"] = {"every_step": 3}
    with pytest.raises(SpecError, match=r"checkpoint\.every_step: unknown field; did you mean"):
        parse_spec(data)


@pytest.mark.parametrize(
    ("have", "branch", "targets", "expected"),
    [
        ([], 8, (8, 16, 51), (0, (8, 16, 51))),  # a fresh trunk: one segment through all
        ([8, 16], 51, (8, 16, 51), (16, (51,))),  # extend from the latest checkpoint
        ([16], 8, (8, 16, 51), (0, (8,))),  # a smaller branch point stops at the next one
        ([8, 51], 16, (8, 16, 51), (8, (16,))),
        ([8], 40, (8, 16, 40, 51), (8, (16, 40, 51))),
    ],
)
def test_next_segment_never_retrains_between_checkpoints(have, branch, targets, expected):
    assert next_segment(have, branch, targets) == expected


def test_demo_wsd_spends_at_most_065_of_independent_runs():
    spec = load_spec(EXAMPLES / "demo_wsd.yaml")
    shared, alone = planned_train_steps(spec)
    assert len(spec.grid.train_tokens) == 4
    budgets = sorted(spec.grid.train_tokens)
    assert all(b / a == 2 for a, b in zip(budgets, budgets[1:], strict=False))
    assert shared / alone == pytest.approx(75 / 120)
    assert shared / alone <= 0.65
    # the same spec with trunk sharing off trains every cell alone
    data = yaml.safe_load((EXAMPLES / "demo_wsd.yaml").read_text())
    data["schedule"]["share_trunk"] = False
    assert planned_train_steps(parse_spec(data)) == (alone, alone)


@pytest.mark.slow
def test_two_budgets_branch_off_one_trunk_trained_once(ray_local, tiny_assets, tmp_path):
    data = wsd_spec(str(tmp_path / "storage"), budgets_steps=(10, 20))
    include = write_math_task(tmp_path / "tasks", questions=4)
    data["eval"]["harness"] = {"tasks": ["mathqa_local"], "include_path": str(include)}

    data["retention"] = {"delete_trunks": False}  # the catalog is read below
    spec = parse_spec(data)
    outcome = run_sweep(spec, tmp_path / "out", resolve=tiny_assets.resolve)
    table = pd.read_parquet(outcome.results_path).set_index("train_tokens")
    assert outcome.finished == 2 and outcome.failed == 0
    small, large = table.loc[10 * 512], table.loc[20 * 512]
    assert (small["branch_step"], large["branch_step"]) == (8, 16)

    trunks = list((tmp_path / "storage" / "trunks").iterdir())
    assert len(trunks) == 1  # both budgets share one trunk
    catalog = read_catalog(trunks[0])
    assert sorted(catalog["checkpoints"], key=int) == ["8", "16"]
    segments = catalog["segments"]
    assert [(s["start"], s["end"]) for s in segments] == [(0, 16)]  # trained once
    assert table["trunk_steps_trained"].sum() == 16  # by exactly one of the two trials

    # the ledger: each cell costs what it would alone; the sweep reports what was spent
    per_step = small["train_flops"] / 10
    assert large["train_flops"] == pytest.approx(20 * per_step)
    spent = (16 + (10 - 8) + (20 - 16)) * per_step
    assert table["spent_train_flops"].sum() == pytest.approx(spent)
    assert outcome.spent_train_flops == pytest.approx(spent)
    assert outcome.independent_train_flops == pytest.approx(30 * per_step)
    summary = json.loads((tmp_path / "out" / "compute.json").read_text())
    assert summary["spent_ratio"] == pytest.approx(22 / 30)

    # the cooldowns really trained from the trunk and learned the domain
    assert (table["domain_bpb"] < table["base_domain_bpb"]).all()
    assert large["domain_bpb"] < small["domain_bpb"]
    assert np.all(table["steps"] == [10, 20])
    assert (table["domain_tokens"] + table["replay_tokens"] == table.index).all()
    # each cooldown's annealed model is scored on the lm-eval task
    assert table["task/mathqa_local/acc"].isin([0, 0.25, 0.5, 0.75, 1]).all()
    assert (table["task/mathqa_local/bpb"] < table["base_task/mathqa_local/bpb"]).all()
