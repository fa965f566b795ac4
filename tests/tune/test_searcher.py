"""The adaptive Tune searcher: suggestions, stop rule, and state that survives a restart.

Trials are played by the simulator (`analysis.simulate`): the searcher's contract with Tune
is its ``suggest`` / ``on_trial_complete`` / ``save`` / ``restore`` methods, exercised here
directly; `tests/e2e` runs it inside a real Tune sweep.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from ray.tune.search import Searcher

from annealscale.analysis.simulate import make_problem
from annealscale.tune.searcher import AdaptiveSearcher


def _searcher(p, state_path=None, **kw):
    cells = [replace(c, key=c.name) for c in p.candidates()]
    opts = {"threshold": 0.9, "budget": None, "q": 3, **kw}
    return AdaptiveSearcher(
        cells=cells, costs=p.costs, target=p.target, state_path=state_path, **opts
    )


def _result(p, cell):
    row = p.observe([cell]).iloc[0]
    return {
        "domain_bpb": float(row["domain_bpb"]),
        "domain_tokens": float(row["domain_tokens"]),
        "train_tokens": float(row["train_tokens"]),
    }


def _play(p, searcher, n, prefix="t"):
    ran = []
    for i in range(n):
        cfg = searcher.suggest(f"{prefix}{i}")
        assert isinstance(cfg, dict), cfg
        cell = searcher.cells[cfg["cell_id"]]
        searcher.on_trial_complete(f"{prefix}{i}", result=_result(p, cell))
        ran.append(cfg["cell_id"])
    return ran


def test_restored_searcher_makes_the_same_next_proposals_and_repeats_no_cell(tmp_path):
    p = make_problem(1)
    state = tmp_path / "adaptive_state.json"
    first = _searcher(p, state)
    ran = _play(p, first, 12)
    assert len(set(ran)) == 12  # never the same cell twice
    assert state.exists()  # written after every result, for a killed sweep

    restored = _searcher(p)
    restored.restore(str(state))
    assert [r["cell_id"] for r in restored.rows] == ran

    expected = [first.suggest(f"n{i}")["cell_id"] for i in range(3)]
    got = [restored.suggest(f"m{i}")["cell_id"] for i in range(3)]
    assert got == expected
    assert not set(got) & set(ran)


def test_running_cells_of_a_killed_sweep_are_proposed_again_but_failed_ones_are_not(tmp_path):
    p = make_problem(2)
    state = tmp_path / "s.json"
    # a threshold the nine cells cannot reach: this test kills the sweep mid-search
    s = _searcher(p, state, threshold=0.999)
    ran = _play(p, s, 9)
    running = [s.suggest("r0")["cell_id"], s.suggest("r1")["cell_id"]]
    failed = s.suggest("r2")["cell_id"]
    s.on_trial_complete("r2", result=None, error=True)  # saves the state; r0, r1 still run
    # the process dies here; a new searcher resumes from the file
    again = _searcher(p, threshold=0.999)
    again.restore(str(state))
    assert failed in again.failed
    open_ids = {c.name for c in again.open_cells()}
    assert set(running) <= open_ids
    assert failed not in open_ids and not open_ids & set(ran)
    proposed = [again.suggest(f"x{i}")["cell_id"] for i in range(3)]
    assert not set(proposed) & ({failed} | set(ran))


def test_budget_stop_finishes_the_search_and_records_why(tmp_path):
    p = make_problem(3)
    s = _searcher(p, tmp_path / "s.json", budget=0.05 * p.grid_cost())
    ids = []
    while True:
        cfg = s.suggest(f"t{len(ids)}")
        if cfg == Searcher.FINISHED:
            break
        assert isinstance(cfg, dict)
        ids.append(cfg["cell_id"])
        s.on_trial_complete(f"t{len(ids) - 1}", result=_result(p, s.cells[cfg["cell_id"]]))
        assert len(ids) < 45
    assert s.stop is not None and s.stop["reason"] == "budget"
    budget = 0.05 * p.grid_cost()
    # the budget is a cap: spent stays under it, and the search ends when nothing fits
    assert s.costs.spent([s.cells[i] for i in ids]) == pytest.approx(s.stop["spent"])
    assert s.stop["spent"] <= budget
    left = budget - s.stop["spent"]
    paid = [s.cells[i] for i in ids]
    assert s.open_cells() and all(s.costs.marginal_cost(c, paid) > left for c in s.open_cells())
    assert "no open cell fits" in s.stop["message"]
    assert s.stop["saved_fraction"] > 0.9
    assert s.suggest("late") == Searcher.FINISHED


def test_a_batch_never_takes_the_committed_cost_above_the_budget():
    p = make_problem(5)
    budget = 0.011 * p.grid_cost()  # less than the seed's first batch of three
    s = _searcher(p, budget=budget, q=3)
    started = []
    while (cfg := s.suggest(f"t{len(started)}")) not in (None, Searcher.FINISHED):
        started.append(cfg["cell_id"])
        assert s.spent <= budget  # running cells count in full
    assert started and s.costs.spent([s.cells[i] for i in started]) <= budget


def test_suggest_waits_while_a_full_batch_runs():
    p = make_problem(4)
    s = _searcher(p, q=2)
    assert isinstance(s.suggest("a"), dict)
    assert isinstance(s.suggest("b"), dict)
    assert s.suggest("c") is None  # two running = q: wait for a result
    s.on_trial_complete("a", result=_result(p, s.cells[s.live["b"]]))
    assert isinstance(s.suggest("c"), dict)


def test_a_trial_reporting_in_parts_is_recorded_from_all_its_results():
    """A cell's trial reports the worker's metrics, then the driver's report without them
    (what `tune.trial.run_cell` does): the searcher must keep the cell, not call it failed."""
    p = make_problem(2)
    searcher = _searcher(p, q=1)
    cfg = searcher.suggest("t0")
    metrics = _result(p, searcher.cells[cfg["cell_id"]])
    driver = {"driver_node": "n1", "attempt_finished_at": 2.0}
    searcher.on_trial_result("t0", metrics)
    searcher.on_trial_result("t0", driver)
    searcher.on_trial_complete("t0", result=driver)  # Tune passes the last result only
    assert [r["cell_id"] for r in searcher.rows] == [cfg["cell_id"]]
    assert searcher.rows[0]["domain_bpb"] == metrics["domain_bpb"]
    assert not searcher.failed
    assert searcher.metric is None  # Tune must not demand the metric in every part


def test_a_budget_of_the_whole_grid_runs_every_cell():
    """A cell costing exactly what is left fits (rounding once refused this problem's last
    cell, and the search stopped for "budget" one cell short). On this problem P(best) stays
    below the threshold until the last cell."""
    p = make_problem(1)
    s = _searcher(p, budget=p.grid_cost(), threshold=0.999999, q=1)
    ran = []
    while isinstance(cfg := s.suggest(f"t{len(ran)}"), dict):
        ran.append(cfg["cell_id"])
        s.on_trial_complete(f"t{len(ran) - 1}", result=_result(p, s.cells[cfg["cell_id"]]))
    assert len(ran) == len(p.candidates())
    assert s.stop is not None and s.stop["spent"] == pytest.approx(p.grid_cost())


def test_a_budget_stop_waits_for_running_cells_before_it_is_recorded():
    p = make_problem(3)
    s = _searcher(p, budget=0.011 * p.grid_cost(), q=3)
    started = []
    while isinstance(cfg := s.suggest(f"t{len(started)}"), dict):
        started.append(cfg["cell_id"])
    assert s.suggest("late") is None and s.stop is None  # cells still run: not decided yet
    for i, cell in enumerate(started):
        s.on_trial_complete(f"t{i}", result=_result(p, s.cells[cell]))
    assert s.suggest("after") == Searcher.FINISHED
    assert s.stop is not None and s.stop["reason"] == "budget"


def test_a_cell_another_sweep_finished_counts_as_finished_not_failed(tmp_path):
    """Two sweeps share a storage path: this adaptive sweep waits for a cell the other
    holds; the other finishes it; the trial this sweep then starts reports it skipped, and
    the searcher takes the stored row as that cell's result."""
    from annealscale.tune.claimed_cells import ClaimingSearcher
    from annealscale.tune.claims import Claims, new_owner
    from annealscale.tune.results import ResultsStore
    from annealscale.tune.trial import SKIPPED
    from tests.tune.test_results import _row

    p = make_problem(3)
    inner = _searcher(p, q=1)
    store = ResultsStore(tmp_path / "results")
    other = Claims(str(tmp_path), new_owner(), stale_seconds=600)
    mine = Claims(str(tmp_path), new_owner(), stale_seconds=600)
    searcher = ClaimingSearcher(inner, mine, store)
    wanted = inner.next_cells(1)[0]
    assert other.acquire(wanted)
    assert searcher.suggest("first") is None  # held by the other sweep: this one waits
    waited = inner.live["first"]
    assert waited == wanted

    finished = _result(p, inner.cells[waited])
    store.write_row(_row(waited, **finished))
    other.release(waited)
    assert searcher.suggest("second") == {"cell_id": waited}
    searcher.on_trial_complete("second", result={SKIPPED: 1})

    assert waited not in inner.failed
    assert [r["cell_id"] for r in inner.rows] == [waited]
    assert inner.rows[0]["domain_bpb"] == finished["domain_bpb"]
