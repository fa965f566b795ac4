"""Does the two-step law predict accuracy where it extrapolates? Coverage and decision
accuracy on simulated tasks whose true loss laws and link are known.

Each problem (`annealscale.analysis.simulate.make_task_problem`): two or three sources
whose task loss follows ``E + B (D/1e6)^-beta``; a four-choice task (chance 0.25) whose
expected accuracy is a sigmoid of the loss (ceiling 0.8-0.95, the sampled cells on the
lower half of the sigmoid, the target further up); five training-token counts from 1e6
to 1.6e7, two seeds per cell with 0.3-1 % noise on the loss; the accuracy of a cell is
binomial over the task's 200-1000 questions around the link at that cell's own loss. The
target is 10x the largest sampled budget (1.6e8 tokens). The true best source leads the
runner-up by at least 0.01 of accuracy.

`annealscale.analysis.evaluate(table, metric="task/sim/acc")` runs on each table as
`annealscale analyze --metric task/sim/acc` does (every candidate law for step 1,
rolling-origin selection, ``--n-boot`` resamples of both steps, the default decision
rule; the chance level is left to the fit unless ``--chance`` is given). Printed as JSON
on the last line:

- ``coverage_90``: share of (problem, source) targets whose true expected accuracy lies
  inside the 90 % interval; ``coverage_90_step1``: the same for the task loss (step 1
  alone);
- ``decision_accuracy``: share of decided problems (headline "Buy") in which the bought
  source is the true best at the target; ``n_decided`` and ``buy_rate`` say how many;
- ``median_abs_error``: median over targets of ``|predicted - true|`` accuracy.

Usage: ``python benchmarks/two_step.py [--problems 200] [--workers 2] [--n-boot 200]
[--log problems.jsonl]``; ``--summarise problems.jsonl`` prints the summary of a log.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time

import numpy as np
import pandas as pd

# Measure the fitting itself, and leave no fit in the user's cache (`analysis.fit_cache`).
os.environ.setdefault("ANNEALSCALE_FIT_CACHE", "0")


def score_problem(args: tuple[int, int, float | None]) -> dict:
    seed, n_boot, chance = args
    from annealscale.analysis import evaluate
    from annealscale.analysis.simulate import make_task_problem

    prob = make_task_problem(seed)
    a = evaluate(
        prob.table(),
        metric=f"task/{prob.task}/acc",
        target_tokens=prob.target_tokens,
        n_boot=n_boot,
        seed=seed,
        chance=chance,
    )
    assert a.two_step is not None
    td, loss_td = a.decision.primary, a.two_step.loss_decisions[0]
    truth = prob.true_at_target()
    by_name = {s.name: s for s in prob.sources}
    inside, inside_loss, errors = [], [], []
    for s, pred in td.predictions.items():
        inside.append(bool(pred.lower <= truth[s] <= pred.upper))
        errors.append(abs(pred.predicted - truth[s]))
        lp = loss_td.predictions[s]
        true_loss = float(by_name[s].loss(prob.target_tokens))
        inside_loss.append(bool(lp.lower <= true_loss <= lp.upper))
    return {
        "seed": seed,
        "inside": inside,
        "inside_loss": inside_loss,
        "errors": errors,
        "outcome": td.outcome,
        "recommended": td.recommended,
        "true_best": prob.true_best(),
        "questions": prob.questions,
    }


def summarise(results: list[dict]) -> dict:
    inside = [x for r in results for x in r["inside"]]
    decided = [r for r in results if r["outcome"] == "buy"]
    small = [r for r in results if r["questions"] < 500]
    outcomes = pd.Series([r["outcome"] for r in results]).value_counts()
    return {
        "problems": len(results),
        "targets": len(inside),
        "coverage_90": round(float(np.mean(inside)), 4),
        "coverage_90_step1": round(
            float(np.mean([x for r in results for x in r["inside_loss"]])), 4
        ),
        "coverage_90_under_500_questions": round(
            float(np.mean([x for r in small for x in r["inside"]])), 4
        )
        if small
        else None,
        "decision_accuracy": round(
            float(np.mean([r["recommended"] == r["true_best"] for r in decided])), 4
        )
        if decided
        else None,
        "n_decided": len(decided),
        "buy_rate": round(len(decided) / len(results), 4),
        "leader_accuracy_all": round(
            float(np.mean([r["recommended"] == r["true_best"] for r in results])), 4
        ),
        "outcomes": {str(k): int(v) for k, v in outcomes.items()},
        "median_abs_error": round(float(np.median([e for r in results for e in r["errors"]])), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--chance", type=float, default=None, help="give the link's floor")
    parser.add_argument("--log", help="append each problem's result here as a JSON line")
    parser.add_argument(
        "--summarise", help="summarise a --log file's problems instead of running any"
    )
    args = parser.parse_args()
    if args.summarise:
        with open(args.summarise, encoding="utf-8") as f:
            done = sorted((json.loads(line) for line in f if line.strip()), key=lambda r: r["seed"])
        print(json.dumps({**summarise(done), "n_boot": args.n_boot, "chance": args.chance}))
        return
    jobs = [
        (s, args.n_boot, args.chance)
        for s in range(args.first_seed, args.first_seed + args.problems)
    ]
    start = time.perf_counter()
    ctx = mp.get_context("spawn")
    results = []
    log = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115
    with ctx.Pool(args.workers) as pool:
        for r in pool.imap_unordered(score_problem, jobs, chunksize=1):
            results.append(r)
            if log is not None:  # one line per problem: a long run can be summarised early
                log.write(json.dumps(r) + "\n")
                log.flush()
    if log is not None:
        log.close()
    results.sort(key=lambda r: r["seed"])
    summary = summarise(results)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["n_boot"] = args.n_boot
    summary["first_seed"] = args.first_seed
    summary["chance"] = args.chance
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
