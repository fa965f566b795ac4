"""Two-step laws: a task score predicted through the law of the task's loss and a fitted
sigmoid link, decided with higher-is-better, and `analyze --metric` end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from annealscale.analysis import evaluate
from annealscale.analysis.compare import probability_best
from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.link import fit_link, questions_from_stderr, sigmoid_link
from annealscale.analysis.objective import Objective
from annealscale.analysis.simulate import TaskProblem, TaskSource
from annealscale.cluster.cli import main

METRIC = "task/sim/acc"
ACC = Objective(column=METRIC, label="sim acc", unit="", higher_is_better=True)


def _problem(seed: int = 0, questions: int = 600) -> TaskProblem:
    """Two sources that cross: `lean` is better at the cheapest cells, `steep` (a steeper
    loss law) at the target, by about 0.1 of accuracy."""
    return TaskProblem(
        sources=(
            TaskSource(name="lean", E=0.8, B=0.5, beta=0.15),
            TaskSource(name="steep", E=0.6, B=0.9, beta=0.45),
        ),
        link=(0.25, 0.9, 0.95, 0.18),
        questions=questions,
        noise=0.004,
        seed=seed,
    )


@pytest.fixture(scope="module")
def two_step():
    p = _problem()
    a = evaluate(p.table(), metric=METRIC, target_tokens=p.target_tokens, n_boot=200)
    return p, a


@pytest.mark.parametrize("chance", [None, 0.25])
def test_link_fit_recovers_known_parameters(chance):
    rng = np.random.default_rng(3)
    true = (0.25, 0.85, 1.2, 0.15)
    loss = rng.uniform(0.8, 1.7, 60)
    n = 2000
    acc = rng.binomial(n, sigmoid_link(loss, true)) / n
    fit = fit_link(loss, acc, questions=n, chance=chance, n_boot=200, seed=1)
    assert fit.floor_fixed == (chance is not None)
    np.testing.assert_allclose(fit.theta, true, atol=0.04)
    lo, hi = np.quantile(fit.draws, [0.02, 0.98], axis=0)
    assert np.all((lo <= np.array(true) + 0.01) & (np.array(true) - 0.01 <= hi))
    assert fit.chi2_dof is not None and 0.5 < fit.chi2_dof < 2.0  # binomial noise explains it
    assert fit.extra_sd < 0.01


def test_questions_are_read_back_from_the_lm_eval_stderr():
    p = np.array([0.3, 0.5, 0.9])
    se = np.sqrt(p * (1 - p) / (400 - 1))
    np.testing.assert_allclose(questions_from_stderr(p, se), 400)
    assert np.isnan(questions_from_stderr([1.0, 0.5], [0.0, 0.0])).all()


def test_predictions_stay_within_floor_and_ceiling():
    rng = np.random.default_rng(0)
    loss = rng.uniform(1.0, 1.4, 12)
    acc = rng.binomial(300, sigmoid_link(loss, (0.25, 0.8, 1.1, 0.1))) / 300
    fit = fit_link(loss, acc, questions=300, n_boot=100)
    far = np.linspace(-5.0, 10.0, 50)  # far outside the observed losses, both ways
    point = fit.predict(far)
    assert np.all((point >= fit.floor - 1e-12) & (point <= fit.ceiling + 1e-12))
    assert 0.0 <= fit.floor < fit.ceiling <= 1.0
    draws = fit.draw_values(np.tile(far, (100, 1)))
    assert np.all((draws >= fit.draws[:, 0].min() - 1e-12) & (draws <= fit.draws[:, 1].max()))


def test_higher_is_better_ranks_the_highest_score_first():
    draws = {"a": np.array([0.5, 0.6, 0.7]), "b": np.array([0.4, 0.7, 0.8])}
    assert probability_best(draws, ACC) == pytest.approx({"a": 1 / 3, "b": 2 / 3})
    assert probability_best(draws) == pytest.approx({"a": 2 / 3, "b": 1 / 3})  # a loss
    assert float(ACC.ahead(0.7, 0.6)) == pytest.approx(0.1)


def test_the_decision_names_the_truly_best_source(two_step):
    p, a = two_step
    td = a.decision.primary
    assert p.true_best() == "steep"
    assert td.objective.higher_is_better and td.objective.column == METRIC
    assert td.outcome == "buy" and td.recommended == "steep"
    assert td.ranking[0] == "steep" and td.gap is not None and td.gap > 0
    assert td.p_best["steep"] >= 0.9
    # the cheapest cells rank the other way: the micro-annealing check sees the flip
    assert td.micro_annealing is not None and td.micro_annealing.pick == "lean"
    assert a.decision.messages[0].startswith("Buy steep:") and "sim acc" in a.decision.messages[0]
    assert a.decision.messages[1].startswith("Two steps: the laws of sim bpb predict")
    # step 1 decided on the loss, lower is better, and agrees
    loss_td = a.two_step.loss_decisions[0]
    assert not loss_td.objective.higher_is_better and loss_td.ranking[0] == "steep"


def test_intervals_contain_the_point_and_the_truth(two_step):
    p, a = two_step
    truth = p.true_at_target()
    link = a.two_step.link
    for s, pred in a.decision.primary.predictions.items():
        assert pred.lower <= pred.predicted <= pred.upper
        assert link.floor <= pred.predicted <= link.ceiling
        assert pred.lower <= truth[s] <= pred.upper, (s, pred, truth[s])
        assert pred.upper - pred.lower < 0.2  # informative, not [0, 1]


def test_the_default_metric_is_unchanged_by_task_columns(two_step):
    """A table with task columns decides on domain_bpb unless --metric says otherwise."""
    p, _ = two_step
    a = evaluate(p.table(), target_tokens=p.target_tokens, n_boot=50)
    assert a.two_step is None and a.decision.primary.objective.column == "domain_bpb"
    assert not a.decision.primary.objective.higher_is_better
    assert "domain bpb" in a.decision.messages[0]


def test_analyze_metric_writes_decision_and_both_steps(tmp_path, capsys):
    p = _problem(seed=1)
    path = tmp_path / "results.parquet"
    p.table().to_parquet(path)
    out = tmp_path / "out"
    argv = ["analyze", str(path), "--out", str(out), "--metric", METRIC]
    assert main([*argv, "--target-tokens", str(p.target_tokens), "--chance", "0.25"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Buy steep: at 1.6e8 training tokens")
    data = json.loads((out / "fits.json").read_text())
    assert data["metric"] == METRIC and data["objective"]["higher_is_better"] is True
    assert data["decision"]["buy"] == "steep"
    step2 = data["two_step"]
    assert step2["loss"] == "task/sim/bpb" and step2["link"]["params"]["floor"] == 0.25
    assert step2["link"]["floor_fixed"] is True
    pred = data["sources"]["steep"]["prediction"]
    assert pred["step1"]["predicted"] > 0 and pred["observation_sd"] > 0
    lo, hi = pred["interval"]
    assert lo <= pred[METRIC] <= hi
    html = (out / "report.html").read_text()
    assert (out / "plots" / "curves.png").exists() and (out / "plots" / "link.png").exists()
    assert "Step 1: the task&#x27;s loss" in html and "Step 2: accuracy vs task loss" in html
    assert "predicted sim acc" in html and "higher is better" in html


def _table_without(column: str | None) -> pd.DataFrame:
    t = _problem().table()
    return t if column is None else t.drop(columns=[column])


@pytest.mark.parametrize(
    ("metric", "drop", "says"),
    [
        ("task/nope/acc", None, "is not a column of the results table"),
        ("accuracy", None, "is not domain_bpb or task/<task>/<metric>"),
        (METRIC, "task/sim/bpb", "needs the task's loss column 'task/sim/bpb'"),
    ],
)
def test_a_metric_the_table_cannot_answer_is_one_line(tmp_path, capsys, metric, drop, says):
    path = tmp_path / "results.parquet"
    _table_without(drop).to_parquet(path)
    out = tmp_path / "out"
    assert main(["analyze", str(path), "--out", str(out), "--metric", metric]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert says in err and "available: domain_bpb, task/sim/acc" in err
    assert not (out / "fits.json").exists()


def test_a_cost_target_or_bad_chance_on_a_task_score_is_refused():
    t = _problem().table()
    with pytest.raises(AnalysisError, match="chance"):
        evaluate(t, metric=METRIC, chance=1.5, n_boot=20)
    t = t.assign(total_cost=t["train_tokens"] * 1e-6)
    with pytest.raises(AnalysisError, match="--target-cost"):
        evaluate(t, metric=METRIC, target_cost=100.0, n_boot=20)


def test_the_task_loss_alone_is_decided_as_a_loss():
    p = _problem()
    a = evaluate(p.table(), metric="task/sim/bpb", target_tokens=p.target_tokens, n_boot=100)
    td = a.decision.primary
    assert a.two_step is None and not td.objective.higher_is_better
    assert td.recommended == "steep" and "sim bpb" in a.decision.messages[0]
