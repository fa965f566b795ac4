"""Evaluation tasks through lm-evaluation-harness (`anneal.harness`) on a real tiny Llama:
our JSONL tasks give the scores the pre-harness path gave, a local lm-eval YAML task on
the math domain reports named metrics with stderr and the correct answer's bits per byte,
data-parallel scoring equals one process, and bad tasks are one line before any compute."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from annealscale.anneal.evaluate import score_choices
from annealscale.anneal.harness import (
    ChoiceTask,
    TaskSuite,
    check_suite,
    evaluate_suite,
    suite_identity,
)
from annealscale.anneal.tasks import encode_pairs
from annealscale.core.errors import AnnealscaleError
from tests.anneal.data.choice_scores_before import MAX_LEN, tiny_model
from tests.helpers import write_math_task

BEFORE = Path(__file__).parent / "data" / "choice_scores_before.json"


def _suite(tmp_path, **fields) -> TaskSuite:
    """A suite whose task data `datasets` prepares under ``tmp_path``."""
    return TaskSuite(cache_dir=str(tmp_path / "task-datasets"), **fields)


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(len(tokenizer))


def test_jsonl_tasks_give_the_scores_recorded_before_the_harness(tokenizer, model, tmp_path):
    before = json.loads(BEFORE.read_text())
    path = tmp_path / "arith.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in before["questions"]))
    suite = _suite(
        tmp_path,
        choice_tasks=(
            ChoiceTask(name="arith", path=str(path)),
            ChoiceTask(name="arith6", path=str(path), max_questions=6),
        ),
        max_len=before["max_len"],
        batch_size=4,
    )
    metrics = evaluate_suite(model, tokenizer, suite).metrics
    for name, limit in (("arith", "None"), ("arith6", "6")):
        old = before["by_max_questions"][limit]
        assert metrics[f"{name}_accuracy"] == old["accuracy"]
        assert metrics[f"{name}_logprob"] == pytest.approx(old["logprob"], rel=1e-9)
        assert metrics[f"task/{name}/acc"] == old["accuracy"]
        assert 0 < metrics[f"task/{name}/acc_stderr"] < 0.5
        assert metrics[f"task/{name}/bpb"] > 0
    assert before["max_len"] == MAX_LEN  # the long question (7) was cut from the left


def test_local_yaml_task_reports_metrics_stderr_and_the_correct_answers_bpb(
    tokenizer, model, tmp_path
):
    include = write_math_task(tmp_path / "tasks", questions=12)
    suite = _suite(tmp_path, tasks=("mathqa_local",), include_paths=(str(include),), max_len=64)
    scores = evaluate_suite(model, tokenizer, suite)
    metrics = scores.metrics
    assert {
        "task/mathqa_local/acc",
        "task/mathqa_local/acc_stderr",
        "task/mathqa_local/acc_norm",
        "task/mathqa_local/acc_norm_stderr",
        "task/mathqa_local/bpb",
        "task/mathqa_local/bpb_stderr",
    } <= set(metrics)
    acc = metrics["task/mathqa_local/acc"]
    assert 0 <= acc <= 1 and (acc * 12) == pytest.approx(round(acc * 12))
    # stderr of a mean of 12 Bernoulli outcomes
    assert metrics["task/mathqa_local/acc_stderr"] == pytest.approx(
        math.sqrt(acc * (1 - acc) / 11), abs=1e-9
    )
    assert scores.tokens > 0
    assert list((tmp_path / "task-datasets").rglob("*.arrow"))  # not under the home directory

    # bpb by hand: -log2 p(correct answer | question) over its UTF-8 bytes, averaged
    rows = [json.loads(line) for line in (include / "mathqa_local.jsonl").read_text().splitlines()]
    pairs = [
        (f"{r['question']}\nDivide both sides:", " " + r["choices"][r["answer"]]) for r in rows
    ]
    lls = score_choices(model, encode_pairs(pairs, tokenizer, 64), batch_size=3)
    nbytes = np.asarray([len(p[1].encode()) for p in pairs])
    assert metrics["task/mathqa_local/bpb"] == pytest.approx(
        float(np.mean(-lls / math.log(2) / nbytes)), rel=1e-9
    )


def test_data_parallel_scoring_equals_one_process(tokenizer, model, tmp_path):
    """Two ranks each score their share and sum the scores: the same metrics as one
    process. (The ranks run one after the other here; the second's sum adds the first's
    share, as `all_reduce` would.)"""
    include = write_math_task(tmp_path / "tasks", questions=7)
    suite = _suite(tmp_path, tasks=("mathqa_local",), include_paths=(str(include),), max_len=64)
    single = evaluate_suite(model, tokenizer, suite).metrics
    shares = []

    def keep(values):
        shares.append(np.asarray(values))
        return values

    evaluate_suite(model, tokenizer, suite, rank=1, world=2, reduce=keep)

    def add_rank_one(values):
        return (np.asarray(values) + shares.pop(0)).tolist()

    both = evaluate_suite(model, tokenizer, suite, rank=0, world=2, reduce=add_rank_one)
    assert both.metrics == pytest.approx(single, rel=1e-12, nan_ok=True)


def test_unknown_task_is_one_line_with_a_suggestion(tmp_path):
    include = write_math_task(tmp_path / "tasks")
    suite = _suite(tmp_path, tasks=("mathqa_locl",), include_paths=(str(include),))
    with pytest.raises(AnnealscaleError) as err:
        check_suite(suite)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("eval.harness.tasks[0]: no lm-eval task named 'mathqa_locl'")
    assert "did you mean 'mathqa_local'" in message


def test_missing_task_data_is_one_line(tmp_path):
    include = write_math_task(tmp_path / "tasks", data=False)
    suite = _suite(tmp_path, tasks=("mathqa_local",), include_paths=(str(include),))
    with pytest.raises(AnnealscaleError) as err:
        check_suite(suite)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("eval.harness.tasks[0]: task 'mathqa_local' could not be loaded")


def test_missing_include_path_and_generative_tasks_are_rejected(tmp_path):
    with pytest.raises(AnnealscaleError, match=r"^eval.harness.include_path: .* does not exist"):
        check_suite(_suite(tmp_path, tasks=("x",), include_paths=(str(tmp_path / "nowhere"),)))
    include = write_math_task(tmp_path / "tasks")
    yaml_path = include / "mathqa_local.yaml"
    text = yaml_path.read_text().replace("multiple_choice", "generate_until")
    yaml_path.write_text(text.replace("metric_list:\n  - metric: acc\n  - metric: acc_norm\n", ""))
    with pytest.raises(AnnealscaleError, match="is a generate_until task"):
        check_suite(_suite(tmp_path, tasks=("mathqa_local",), include_paths=(str(include),)))


def test_identity_follows_the_task_files_bytes(tmp_path):
    include = write_math_task(tmp_path / "tasks")
    suite = _suite(tmp_path, tasks=("mathqa_local",), include_paths=(str(include),))
    first = suite_identity(suite)
    assert suite_identity(suite) == first
    data = include / "mathqa_local.jsonl"
    data.write_text(data.read_text().replace('"answer": 0', '"answer": 1', 1))
    changed_data = suite_identity(suite)
    assert changed_data != first
    config = include / "mathqa_local.yaml"
    config.write_text(config.read_text().replace("Divide both sides:", "Answer:"))
    assert suite_identity(suite) not in (first, changed_data)
    assert suite_identity(TaskSuite()) == ""
