"""The retention policy (`tune.retention`): after a sweep, storage holds only what the
policy keeps, and a resumed sweep still finds every checkpoint it needs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from annealscale.tune.retention import RetentionCallback, cell_checkpoints, prune_trunk
from annealscale.tune.spec import RetentionSpec, parse_spec
from annealscale.tune.sweep import run_sweep
from tests.helpers import TOKENS_PER_STEP, sweep_spec


def _run_dir(root: Path, identity: str, steps=(2, 4, 6)) -> Path:
    run = root / "train" / f"cell-{identity}"
    for step in steps:
        (run / f"step-{step:08d}").mkdir(parents=True)
        (run / f"step-{step:08d}" / "state.bin").write_bytes(b"x" * 10)
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    return run


def _trunk(root: Path, identity: str) -> Path:
    trunk = root / "trunks" / identity
    (trunk / "segment-0-8" / "step-00000004").mkdir(parents=True)
    (trunk / "catalog.json").write_text("{}")
    (trunk / "lock").write_text("")
    return trunk


class _Store:
    def __init__(self):
        self.finished: set[str] = set()

    def has_finished(self, identity: str) -> bool:
        return identity in self.finished

    def finished_ids(self) -> set[str]:
        # a listing of every row per finished cell made a sweep quadratic in its cells
        raise AssertionError("retention must not list the whole store per cell")


def _callback(tmp_path, store, **policy):
    plans = {
        "a": SimpleNamespace(trunk=SimpleNamespace(identity="t")),
        "b": SimpleNamespace(trunk=SimpleNamespace(identity="t")),
        "c": SimpleNamespace(trunk=None),
    }
    return RetentionCallback(
        RetentionSpec(**policy),
        plans,
        str(tmp_path / "train"),
        str(tmp_path / "trunks"),
        store,
    )


def test_finished_cells_lose_checkpoints_and_trunks_go_when_every_branch_is_done(tmp_path):
    runs = {i: _run_dir(tmp_path, i) for i in "abc"}
    trunk = _trunk(tmp_path, "t")
    store = _Store()
    callback = _callback(tmp_path, store)

    callback.after_finished("a")  # no row yet: nothing is touched
    assert len(cell_checkpoints(str(runs["a"]))) == 3

    store.finished.add("a")
    callback.after_finished("a")
    assert cell_checkpoints(str(runs["a"])) == []
    assert (runs["a"] / "checkpoint_manager_snapshot.json").exists()
    # b branches from the same trunk and has no row: a resumed b still finds both
    assert len(cell_checkpoints(str(runs["b"]))) == 3
    assert (trunk / "catalog.json").exists() and (trunk / "segment-0-8").is_dir()

    store.finished.add("b")
    callback.after_finished("b")
    assert cell_checkpoints(str(runs["b"])) == []
    assert sorted(p.name for p in trunk.iterdir()) == ["lock"]  # every branch done
    assert len(cell_checkpoints(str(runs["c"]))) == 3  # c untouched


def test_keep_final_keeps_only_the_newest_checkpoint(tmp_path):
    run = _run_dir(tmp_path, "c", steps=(4, 8, 10))
    store = _Store()
    store.finished.add("c")
    _callback(tmp_path, store, keep_final=True).after_finished("c")
    assert [step for step, _ in cell_checkpoints(str(run))] == [10]


def test_a_policy_that_keeps_everything_deletes_nothing(tmp_path):
    runs = {i: _run_dir(tmp_path, i) for i in "ab"}
    trunk = _trunk(tmp_path, "t")
    store = _Store()
    store.finished |= {"a", "b"}
    callback = _callback(tmp_path, store, delete_checkpoints=False, delete_trunks=False)
    for identity in "ab":
        callback.after_finished(identity)
        assert len(cell_checkpoints(str(runs[identity]))) == 3
    assert (trunk / "catalog.json").exists()


def test_a_trunk_being_trained_is_not_deleted(tmp_path):
    import fcntl

    trunk = _trunk(tmp_path, "t")
    with open(trunk / "lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert prune_trunk(trunk) is False
    assert (trunk / "catalog.json").exists()
    assert prune_trunk(trunk) is True


@pytest.mark.slow
def test_a_sweep_leaves_what_the_policy_keeps_and_a_resumed_sweep_finds_its_branch(
    ray_local, tiny_assets, tmp_path
):
    from annealscale.tune.cells import expand_grid
    from annealscale.tune.prepare import inputs_identity

    storage = tmp_path / "storage"
    data = sweep_spec(
        str(storage),
        name="retention",
        grid={
            "curation_spend": [0.2],
            "train_tokens": [4 * TOKENS_PER_STEP, 8 * TOKENS_PER_STEP],
        },
        schedule={"kind": "wsd", "peak_lr": 2e-3, "warmup_steps": 2, "cooldown_fraction": 0.5},
        checkpoint={"every_steps": 1, "keep": 2},
        retention={"keep_final": True},
        retries={"trial_failures": 0, "worker_failures": 0},
        resources={"max_concurrent_trials": 2},
    )
    spec = parse_spec(data)
    inputs = inputs_identity(spec, tiny_assets.resolve)
    cells = {
        c.train_tokens: c.identity for c in expand_grid(spec, inputs.shared, inputs.per_source)
    }
    small, large = cells[4 * TOKENS_PER_STEP], cells[8 * TOKENS_PER_STEP]
    # The large cell's Train run directory is taken by a file, so it fails this time.
    (storage / "train").mkdir(parents=True)
    blocked = storage / "train" / f"cell-{large}"
    blocked.write_text("not a directory")

    first = run_sweep(spec, tmp_path / "out", resolve=tiny_assets.resolve)
    assert (first.finished, first.failed) == (1, 1)
    # the finished cell keeps its final checkpoint only (step 4; it took step 3 too)
    assert [s for s, _ in cell_checkpoints(str(storage / "train" / f"cell-{small}"))] == [4]
    # the unfinished cell's branch point (step 4 of the trunk) is still there
    (trunk,) = (storage / "trunks").iterdir()
    assert (trunk / "catalog.json").exists()

    blocked.unlink()
    again = run_sweep(spec, tmp_path / "out", resolve=tiny_assets.resolve, resume=True)
    assert (again.finished, again.failed) == (2, 0)
    table = pd.read_parquet(again.results_path).set_index("cell_id")
    assert table.loc[large, "trunk_steps_trained"] == 0  # branched from the kept trunk
    assert table.loc[large, "branch_step"] == 4
    assert [s for s, _ in cell_checkpoints(str(storage / "train" / f"cell-{large}"))] == [8]
    # every branch done: the trunk's checkpoints are gone, the finished rows remain
    assert sorted(p.name for p in trunk.iterdir()) == ["lock"]
    assert (table["status"] == "finished").all()
