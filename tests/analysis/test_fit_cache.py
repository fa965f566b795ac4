"""Fits are kept on disk by their inputs (`analysis.fit_cache`): analysing a table again at
another target refits nothing and gives exactly what a refit gives; other points, a torn
entry, a user law or the switch turned off refit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from annealscale.analysis.fit_cache import SWITCH, remembered
from annealscale.analysis.laws import POWER_LAW_D
from annealscale.analysis.report import evaluate

N_BOOT = 200


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNEALSCALE_CACHE", str(tmp_path))
    monkeypatch.delenv(SWITCH, raising=False)
    return tmp_path / "fits"


def _entries(cache) -> dict:
    """Each entry's file (an inode: a rewrite renames a new file over it) and size."""
    return {p: (p.stat().st_ino, p.stat().st_size) for p in cache.rglob("*.pkl")}


def _fitted(analysis) -> dict:
    """Every source's pooled parameters and bootstrap refits, and its spend fits."""
    out = {}
    for name, fits in analysis.fits.items():
        out[name] = np.array(list(fits.pooled.result.params.values()))
        out[f"{name}/boot"] = fits.pooled.bootstrap.params
        for g in fits.per_spend:
            out[f"{name}/{g.curation_spend}"] = np.array(list(g.result.params.values()))
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_another_target_refits_nothing_and_gets_what_a_refit_gets(cache, results, monkeypatch):
    first = evaluate(results, target_tokens=1e8, n_boot=N_BOOT)
    stored = _entries(cache)
    assert stored, "the first analysis kept no fit"
    second = evaluate(results, target_tokens=3e8, n_boot=N_BOOT)
    assert _entries(cache) == stored  # nothing new, nothing rewritten
    _assert_same(_fitted(first), _fitted(second))
    assert second.law is first.law
    assert all(f.pooled.result.law is first.law for f in second.fits.values())

    monkeypatch.setenv(SWITCH, "0")
    refit = evaluate(results, target_tokens=3e8, n_boot=N_BOOT)
    _assert_same(_fitted(refit), _fitted(second))
    assert refit.decision.best_source == second.decision.best_source
    assert _entries(cache) == stored  # the switch off writes nothing


def test_other_points_are_fitted_anew(cache, results):
    evaluate(results, target_tokens=1e8, n_boot=N_BOOT)
    before = _entries(cache)
    changed = results.copy()
    row = changed.index[(changed["source"] == "A") & (changed["status"] == "finished")][0]
    changed.loc[row, "domain_bpb"] *= 1.01
    evaluate(changed, target_tokens=1e8, n_boot=N_BOOT)
    after = _entries(cache)
    assert set(before) < set(after)  # source A's fits are new entries
    assert all(after[p] == before[p] for p in before)


def test_a_torn_entry_is_refitted_and_written_again(cache, results):
    first = evaluate(results, target_tokens=1e8, n_boot=N_BOOT)
    for path in _entries(cache):
        path.write_bytes(path.read_bytes()[:10])
    again = evaluate(results, target_tokens=1e8, n_boot=N_BOOT)
    _assert_same(_fitted(first), _fitted(again))
    assert all(size > 10 for _, size in _entries(cache).values())


def test_only_built_in_laws_with_plain_settings_are_kept(cache):
    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    x, y = np.arange(4.0), np.ones(4)
    assert remembered("fit", POWER_LAW_D, (x, y), {"tol": 1e-12}, compute) == 1
    assert remembered("fit", POWER_LAW_D, (x, y), {"tol": 1e-12}, compute) == 1
    assert remembered("fit", POWER_LAW_D, (x, y + 1), {"tol": 1e-12}, compute) == 2
    assert remembered("fit", POWER_LAW_D, (x, y), {"tol": 1e-10}, compute) == 3
    lookalike = dataclasses.replace(POWER_LAW_D)  # a user's law may share a name
    assert remembered("fit", lookalike, (x, y), {"tol": 1e-12}, compute) == 4
    assert remembered("fit", lookalike, (x, y), {"tol": 1e-12}, compute) == 5
    opaque = {"target": object()}
    assert remembered("fit", POWER_LAW_D, (x, y), opaque, compute) == 6
    assert remembered("fit", POWER_LAW_D, (x, y), opaque, compute) == 7
    assert len(_entries(cache)) == 3


def test_entries_unused_for_a_month_are_deleted_and_a_read_counts_as_use(cache):
    import os
    import pickle
    import time

    from annealscale.analysis.fit_cache import MAX_UNUSED_DAYS, evict_unused

    def fit(scale):
        x = np.array([1.0, 2.0, 4.0]) * scale
        return remembered("test", POWER_LAW_D, (x,), {}, lambda: float(x.sum()))

    for scale in (1.0, 2.0, 3.0):
        fit(scale)
    by_value = {pickle.loads(p.read_bytes()): p for p in cache.rglob("*.pkl")}
    old, read, fresh = by_value[7.0], by_value[14.0], by_value[21.0]
    long_ago = time.time() - (MAX_UNUSED_DAYS + 5) * 86400
    for path in (old, read):
        os.utime(path, (long_ago, long_ago))
    written = {p: p.stat().st_ino for p in (read, fresh)}

    assert fit(2.0) == 14.0  # read again today: written long ago, but in use
    assert evict_unused(cache) == 1
    assert not old.exists() and read.exists() and fresh.exists()
    assert {p: p.stat().st_ino for p in (read, fresh)} == written  # none rewritten
