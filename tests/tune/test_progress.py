"""The live progress line: counts, tokens, compute against the budget, and the ETA."""

from __future__ import annotations

from annealscale.tune.progress import SweepProgress


def test_line_counts_cells_tokens_compute_and_eta():
    progress = SweepProgress(
        total=5, budget_flops=10e15, budget_usd=20.0, concurrency=2, started=100.0
    )
    assert progress.eta_seconds() is None
    for identity in "abc":
        progress.start(identity)
    progress.end("a", ok=True, tokens=4096, flops=2e15, usd=4.0, seconds=30.0)
    progress.end("b", ok=False, tokens=0, flops=0.0, usd=0.0, seconds=10.0)
    # 3 cells left at 20 s each, 2 at a time: two waves
    assert progress.eta_seconds() == 40.0
    line = progress.line(now=160.0)
    assert "1/5 done, 1 running, 1 failed" in line
    assert "4,096 tokens trained" in line
    assert "2/10 PFLOP (20%)" in line and "4.00/20.00 USD" in line
    assert "60 s elapsed, ETA 40 s" in line


def test_eta_is_zero_when_every_cell_ended():
    progress = SweepProgress(total=1, budget_flops=1.0, budget_usd=1.0, concurrency=1)
    progress.start("a")
    progress.end("a", ok=True, tokens=1, flops=1.0, usd=1.0, seconds=5.0)
    assert progress.eta_seconds() == 0.0


def _row(source: str, spend: float, train: float, curation: float) -> dict:
    # the planner's row: total_cost holds the pool's whole curation cost (tune.prepare)
    return {
        "source": source,
        "source_identity": f"{source}-id",
        "curation_spend": spend,
        "train_cost": train,
        "total_cost": train + curation,
        "train_flops": 1e12,
        "eval_flops": 0.0,
    }


def test_curation_is_counted_once_per_pool_in_the_budget_and_the_spend():
    from ray.tune.experiment import Trial

    from annealscale.tune.progress import ProgressCallback, planned_usd

    planned = {
        "a": _row("web", 0.6, train=1.0, curation=5.0),
        "b": _row("web", 0.6, train=3.0, curation=5.0),  # same pool as a
        "c": _row("web", 1.8, train=1.0, curation=7.0),
    }
    assert planned_usd(planned.values()) == 1.0 + 3.0 + 1.0 + 5.0 + 7.0
    progress = SweepProgress(
        total=3, budget_flops=3e12, budget_usd=planned_usd(planned.values()), concurrency=1
    )
    callback = ProgressCallback(progress, planned, every_seconds=60.0)
    for cell in ("a", "b"):
        trial = Trial("run_cell", config={"cell_id": cell}, stub=True)
        callback.on_trial_start(0, [], trial)
        callback.on_trial_result(0, [], trial, {"train_tokens": 4096})
        callback.on_trial_complete(0, [], trial)
    assert progress.usd == 1.0 + 5.0 + 3.0  # b reuses a's pool
    assert "9.00/17.00 USD" in progress.line()


def test_an_adaptive_sweep_shows_its_budget_cap_and_a_bound_on_the_eta():
    progress = SweepProgress(
        total=4, budget_flops=4e15, budget_usd=20.0, concurrency=1, started=0.0
    )
    progress.as_adaptive(budget_left_usd=12.0)  # the stop rule may end it after any cell
    progress.start("a")
    progress.end("a", ok=True, tokens=1, flops=1e15, usd=3.0, seconds=10.0)
    line = progress.line(now=10.0)
    assert "3.00/12.00 USD" in line
    assert "ETA at most 30 s" in line


def test_a_pool_paid_by_an_earlier_run_is_not_counted_again():
    from ray.tune.experiment import Trial

    from annealscale.tune.progress import ProgressCallback, pool_of

    planned = {"b": _row("web", 0.6, train=3.0, curation=5.0)}
    progress = SweepProgress(total=1, budget_flops=1e12, budget_usd=8.0, concurrency=1)
    paid = {pool_of(planned["b"])}  # cell a of the same pool finished in an earlier run
    callback = ProgressCallback(progress, planned, every_seconds=60.0, paid_pools=paid)
    trial = Trial("run_cell", config={"cell_id": "b"}, stub=True)
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, {"train_tokens": 4096})
    callback.on_trial_complete(0, [], trial)
    assert progress.usd == 3.0
