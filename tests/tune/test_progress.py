"""The live progress line: counts, tokens, compute against the budget, and the ETA."""

from __future__ import annotations

from tune.progress import SweepProgress


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
