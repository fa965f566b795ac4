"""An adaptive sweep on a real local Ray, interrupted mid-way and resumed.

The interruption is real: the searcher raises inside Tune's loop after its second result
(after saving its state, as it does after every result), which aborts ``tuner.fit()`` and
the sweep the way a crash of the driver would. The rerun builds a new searcher that
restores the saved state; no finished cell runs again and the sweep ends by the stop rule.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from annealscale.tune.adaptive import STATE_FILE, SUMMARY_FILE, SearcherFactory
from annealscale.tune.spec import parse_spec
from annealscale.tune.sweep import run_sweep
from tests.e2e.test_sweep_e2e import tiny_spec

pytestmark = pytest.mark.slow


class _Crash(RuntimeError):
    pass


class _CrashingFactory(SearcherFactory):
    """Builds the real searcher, made to fail after ``after`` results."""

    def __init__(self, spec, out_dir, after: int):
        super().__init__(spec, out_dir)
        self.after = after

    def __call__(self, **kw):
        searcher = super().__call__(**kw)
        complete = searcher.on_trial_complete

        def on_trial_complete(trial_id, result=None, error=False):
            complete(trial_id, result=result, error=error)  # saves the state first
            if len(searcher.rows) >= self.after:
                raise _Crash("driver killed")

        searcher.on_trial_complete = on_trial_complete
        return searcher


def test_killed_adaptive_sweep_resumes_with_its_state(ray_local, tiny_assets, tmp_path):
    raw = tiny_spec(str(tmp_path / "storage"))
    raw["grid"]["train_tokens"] = [4096, 8192, 32768]
    raw["adaptive"] = {"threshold": 0.95, "budget_fraction": 0.5, "batch_size": 1}
    spec = parse_spec(raw)
    out = tmp_path / "out"

    with pytest.raises(Exception) as info:
        run_sweep(spec, out, resolve=tiny_assets.resolve, search_alg=_CrashingFactory(spec, out, 2))
    assert "driver killed" in str(info.value) or isinstance(info.value, _Crash)
    state = json.loads((out / STATE_FILE).read_text())
    before = {r["cell_id"] for r in state["rows"]}
    assert len(before) == 2 and state["stop"] is None
    written = {p.stem for p in (tmp_path / "storage" / "results" / "cells").glob("*.parquet")}
    assert before <= written

    factory = SearcherFactory(spec, out)
    outcome = run_sweep(spec, out, resolve=tiny_assets.resolve, search_alg=factory)
    searcher = factory.searcher
    assert searcher is not None
    assert {r["cell_id"] for r in searcher.rows} >= before  # restored, then extended
    table = pd.read_parquet(out / "results.parquet")
    assert table["cell_id"].is_unique  # no cell ran twice
    assert outcome.skipped == len(written)
    summary = factory.summary()
    assert summary["reason"] in ("budget", "confident")
    assert (out / SUMMARY_FILE).exists()
    grid_cells = 2 * 2 * 3
    assert len(table) < grid_cells  # stopped before the full grid
    assert summary["final"]["spent"] < summary["final"]["grid_cost"]
    assert summary["final"]["spent"] <= summary["final"]["budget"]  # a cap, not a trigger
