"""Two sweeps sharing a storage path, as their searchers see it (no Ray started): a cell
reaches Tune only once its sweep holds the claim, each sweep takes the cells nobody claimed
first, and waits for the rest holding no trial."""

from __future__ import annotations

import pickle

from ray.tune.search import Searcher

from annealscale.tune.claimed_cells import CellQueue, ClaimingSearcher
from annealscale.tune.claims import Claims, new_owner
from annealscale.tune.results import ResultsStore
from tests.tune.test_results import _row


def _sweep(root, cells, **kw):
    claims = Claims(str(root), new_owner(), stale_seconds=600)
    return ClaimingSearcher(CellQueue(cells), claims, ResultsStore(root), **kw), claims


def _suggest(searcher, n):
    out = []
    for i in range(n):
        config = searcher.suggest(f"t{len(out)}-{i}-{id(out)}")
        out.append(config["cell_id"] if isinstance(config, dict) else config)
    return out


def test_each_sweep_takes_unclaimed_cells_first_and_waits_for_the_rest_without_a_trial(
    tmp_path,
):
    a, claims_a = _sweep(tmp_path, ["c1", "c2", "c3"])
    b, _ = _sweep(tmp_path, ["c1", "c2", "c3"])
    assert _suggest(a, 1) == ["c1"]
    # b finds c1 claimed: no trial for it now; it asks for the next cell instead
    assert _suggest(b, 3) == [None, "c2", "c3"]
    assert _suggest(a, 2) == [None, None]  # c2 and c3 are b's: a waits, holding no trial
    assert _suggest(b, 1) == [None]  # c1 is still a's: b waits at its end
    assert claims_a.held() == ["c1"]

    # a finishes c1 and releases it: b's waiting c1 goes out (its trial will skip it)
    ResultsStore(tmp_path).write_row(_row("c1"))
    claims_a.release("c1")
    assert _suggest(b, 2) == ["c1", Searcher.FINISHED]


def test_a_dead_sweeps_claim_is_taken_over_by_a_waiting_sweep(tmp_path):
    b, claims_b = _sweep(tmp_path, ["c1"])
    gone = Claims(str(tmp_path), {**new_owner(), "pid": 2**22 + 7}, stale_seconds=600)
    assert gone.acquire("c1")  # a driver on this host whose process no longer exists
    assert _suggest(b, 1) == ["c1"]
    assert claims_b.held() == ["c1"]


def test_results_reach_the_inner_searcher_under_the_id_it_suggested(tmp_path):
    seen = []

    class Inner(CellQueue):
        def on_trial_complete(self, trial_id, result=None, error=False):
            seen.append((trial_id, result))

    other = Claims(str(tmp_path), new_owner(), stale_seconds=600)
    assert other.acquire("c1")
    claims = Claims(str(tmp_path), new_owner(), stale_seconds=600)
    searcher = ClaimingSearcher(Inner(["c1"]), claims, ResultsStore(tmp_path))
    assert searcher.suggest("first") is None  # c1 is the other sweep's
    other.release("c1")
    assert searcher.suggest("second") == {"cell_id": "c1"}
    searcher.on_trial_complete("second", result={"domain_bpb": 1.0})
    assert seen == [("first", {"domain_bpb": 1.0})]


def test_a_restored_or_stopping_searcher_hands_out_nothing(tmp_path):
    stop = []
    searcher, claims = _sweep(tmp_path, ["c1", "c2"], stopping=lambda: bool(stop))
    # what a resumed sweep unpickles from Tune's experiment state: the interrupted run's
    # owner must not claim anything (the resumed run's own searcher does)
    restored = pickle.loads(pickle.dumps(searcher))
    assert restored.suggest("t") == Searcher.FINISHED
    assert claims.held() == []
    assert searcher.suggest("t1") == {"cell_id": "c1"}
    stop.append(True)
    assert searcher.suggest("t2") == Searcher.FINISHED
    assert claims.held() == ["c1"]


def test_keep_alive_refreshes_every_claim_its_owner_holds_then_releases_them(tmp_path):
    import os
    import time

    mine = Claims(str(tmp_path), new_owner(), stale_seconds=2.0)
    other = Claims(str(tmp_path), new_owner(), stale_seconds=2.0)
    assert mine.acquire("c1") and mine.acquire("c2") and other.acquire("c3")
    old = time.time() - 100
    for name in ("c1", "c2", "c3"):
        os.utime(mine.path(name), (old, old))
    with mine.keep_alive():
        time.sleep(1.5)
        assert time.time() - mine.path("c1").stat().st_mtime < 5
        assert time.time() - mine.path("c2").stat().st_mtime < 5
        assert abs(mine.path("c3").stat().st_mtime - old) < 1  # not ours
    # the sweep's trials are over: what it still holds is released, the other's kept
    assert mine.held() == [] and other.held() == ["c3"]


def test_the_grid_runs_its_largest_cells_first_and_equal_cells_in_order():
    from annealscale.tune.claimed_cells import longest_first

    rows = {
        "a": {"train_flops": 1.0, "eval_flops": 0.5},
        "b": {"train_flops": 9.0, "eval_flops": 0.5},
        "c": {"train_flops": 1.0, "eval_flops": 0.5},
        "d": {"train_flops": 4.0, "eval_flops": 9.0},
    }
    assert longest_first(["a", "b", "c", "d"], rows) == ["d", "b", "a", "c"]
    assert longest_first(["c", "a"], rows) == ["c", "a"]
