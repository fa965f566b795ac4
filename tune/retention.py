"""Storage that lasts: what a sweep leaves on storage once its cells finish.

A finished cell's row holds everything the analysis reads, and a finished cell is never
run again, so its periodic checkpoints can no longer be resumed from. Under the spec's
``retention`` policy (`tune.spec.RetentionSpec`), once a cell's finished row is written:

- its Ray Train run keeps no checkpoint (``delete_checkpoints``), or only its final one
  (``keep_final``: the cell checkpoints after its last step, see `tune.trunks`);
- the WSD trunk it branched from is deleted once every cell of the sweep on that trunk is
  finished (``delete_trunks``): until then an unfinished cell, or a resumed sweep, still
  finds its branch point.

Unfinished and failed cells keep everything, so a resumed sweep finds every checkpoint it
needs. `RetentionCallback` runs after the row writer (`tune.sweep`), per trial.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pyarrow.fs as pafs
from ray import tune

from annealscale.tune.storage import filesystem

log = logging.getLogger(__name__)

CHECKPOINT_DIR = re.compile(r"^step-(\d+)$")
"""Checkpoint directories of a cell's Train run (`anneal.checkpoint.checkpoint_name`)."""


def cell_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """(step, path) of every checkpoint in one Train run directory, oldest first."""
    fs, path = filesystem(run_dir)
    listing = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    found = []
    for info in listing:
        match = CHECKPOINT_DIR.match(info.base_name)
        if match and info.type == pafs.FileType.Directory:
            found.append((int(match.group(1)), info.path))
    return sorted(found)


def prune_cell(run_dir: str, *, keep_final: bool) -> list[str]:
    """Delete a finished cell's checkpoints, all or all but the newest; the deleted paths."""
    fs, _ = filesystem(run_dir)
    checkpoints = cell_checkpoints(run_dir)
    doomed = checkpoints[:-1] if keep_final else checkpoints
    for _, path in doomed:
        fs.delete_dir(path)
    return [path for _, path in doomed]


def prune_trunk(trunk_dir: Path) -> bool:
    """Delete a trunk's segments and catalog, holding its lock (skipped while another
    trial holds it); whether it was deleted."""
    from annealscale.tune.trunks import _try_lock

    trunk_dir = Path(trunk_dir)
    if not trunk_dir.is_dir():
        return False
    with _try_lock(trunk_dir / "lock") as held:
        if not held:
            return False
        for child in trunk_dir.iterdir():
            if child.name == "lock":
                continue
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    return True


class RetentionCallback(tune.Callback):
    """Applies the retention policy to each cell whose finished row has been written.

    Registered after the row writer, so a cell's row is on storage before anything of the
    cell is deleted; a cell without a finished row (failed, or skipped) is never touched.
    """

    def __init__(self, policy, plans: dict, train_root: str, trunks_root: str, store):
        self._policy = policy
        self._plans = plans
        self._train_root = train_root
        self._trunks_root = Path(trunks_root)
        self._store = store
        self._trunk_cells: dict[str, set[str]] = {}
        for identity, plan in plans.items():
            if plan.trunk is not None:
                self._trunk_cells.setdefault(plan.trunk.identity, set()).add(identity)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.after_finished(trial.config["cell_id"])

    def after_finished(self, identity: str) -> None:
        # one stat per cell (listing every finished row here made a sweep quadratic)
        if identity not in self._plans or not self._store.has_finished(identity):
            return
        from annealscale.tune.trial import train_run_name

        policy = self._policy
        if policy.delete_checkpoints or policy.keep_final:
            run_dir = f"{self._train_root}/{train_run_name(identity)}"
            deleted = prune_cell(run_dir, keep_final=policy.keep_final)
            log.info("cell %s: %d checkpoint(s) deleted (retention)", identity, len(deleted))
        trunk = self._plans[identity].trunk
        if trunk is not None and policy.delete_trunks:
            if all(map(self._store.has_finished, self._trunk_cells[trunk.identity])):
                if prune_trunk(self._trunks_root / trunk.identity):
                    log.info("trunk %s deleted: every branch finished", trunk.identity)


def retention_callbacks(spec, plans: dict, train_root: str, trunks_root: str, store) -> list:
    """The sweep's retention callback (none when the policy keeps everything)."""
    policy = spec.retention
    if not (policy.delete_checkpoints or policy.keep_final or policy.delete_trunks):
        return []
    return [RetentionCallback(policy, plans, train_root, trunks_root, store)]
