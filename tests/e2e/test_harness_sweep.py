"""A sweep with lm-evaluation-harness tasks on the real local Ray: a local YAML task on the
math domain and one of our JSONL tasks, scored at the end of every cell and on the base
model, land in the results table as named columns; a task that does not exist or whose
data are missing stops the sweep with one line (exit 2) before anything is curated."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from annealscale.tune.spec import parse_spec
from annealscale.tune.sweep import run_sweep
from tests.helpers import write_math_task

pytestmark = pytest.mark.slow

TASK = "mathqa_local"


def _harness_spec(tools, resolve, root, *, tasks=(TASK,), data=True) -> dict:
    include = write_math_task(root / "tasks", TASK, questions=8, data=data)
    arith = root / "arith.jsonl"
    arith.write_text(
        "".join(
            json.dumps(
                {"question": f"Compute {a} + 3 =", "choices": [str(a + 3), str(a)], "answer": 0}
            )
            + "\n"
            for a in range(5)
        )
    )
    spec = tools.spec(resolve, root / "storage", name="harness", tokens=(2048, 4096))
    spec["eval"]["tasks"] = [{"name": "arith", "path": str(arith)}]
    spec["eval"]["harness"] = {
        "tasks": list(tasks),
        "include_path": str(include),
        "num_fewshot": 1,
        "batch_size": 4,
    }
    return spec


def test_every_cell_reports_the_tasks_metrics_and_stderr(ray_local, resolve, tools, tmp_path):
    spec = parse_spec(_harness_spec(tools, resolve, tmp_path))
    outcome = run_sweep(spec, tmp_path / "out", resolve=resolve)
    assert outcome.finished == 2
    table = pd.read_parquet(outcome.results_path)
    assert len(table) == 2 and set(table["status"]) == {"finished"}
    for metric in ("acc", "acc_norm"):
        values = table[f"task/{TASK}/{metric}"]
        assert values.between(0, 1).all()
        assert np.isin(np.round(values * 8, 9), np.arange(9)).all()  # out of 8 questions
        assert (table[f"task/{TASK}/{metric}_stderr"] > 0).all() or (values.isin([0, 1])).any()
        assert table[f"base_task/{TASK}/{metric}"].nunique() == 1
    assert (table[f"task/{TASK}/bpb"] > 0).all() and (table[f"task/{TASK}/bpb_stderr"] > 0).all()
    # annealing on the math domain lowers the correct answers' bits per byte
    assert (table[f"task/{TASK}/bpb"] < table[f"base_task/{TASK}/bpb"]).all()
    # our JSONL task runs through the same harness, under its old names and the new ones
    assert (table["arith_accuracy"] == table["task/arith/acc"]).all()
    assert (table["arith_logprob"] < 0).all()
    provenance = json.loads(table["eval_harness"].iloc[0])
    assert provenance["lm_eval"] and provenance["tasks"] == [TASK]
    assert provenance["num_fewshot"] == 1
    # the tasks' data were prepared under the sweep's storage, not the home directory
    assert list((tmp_path / "storage" / "cache" / "task-datasets").rglob("*.arrow"))


@pytest.mark.parametrize(
    ("tasks", "data", "expected"),
    [
        (("mathqa_locale",), True, "eval.harness.tasks[0]: no lm-eval task named 'mathqa_locale'"),
        ((TASK,), False, f"eval.harness.tasks[0]: task '{TASK}' could not be loaded"),
    ],
)
def test_a_bad_task_is_one_line_before_any_compute(
    ray_local, resolve, tools, tmp_path, capsys, tasks, data, expected
):
    from annealscale.cluster.cli import main

    spec = _harness_spec(tools, resolve, tmp_path, tasks=tasks, data=data)
    path = tools.write(tmp_path / "spec.yaml", spec)
    code = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--no-analyze"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"annealscale: error: {expected}")
    assert "\n" not in err
    assert not list((tmp_path / "storage").rglob("*.parquet"))  # nothing curated or packed
