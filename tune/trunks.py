"""WSD trunk branching: one constant-rate trunk per (source, spend, seed), many cooldowns.

With a warmup-stable-decay schedule the stable part does not depend on the run's length
(Hägele et al. 2024), so cells that differ only in training tokens share it: the trunk is
trained once, with a checkpoint at each cell's branch point (where its cooldown starts),
and each cell trains only its cooldown from that checkpoint.

Layout under ``<storage>/trunks/<trunk identity>/``:

- ``catalog.json``: the branch checkpoints (step -> directory) and the trained segments;
  rewritten atomically, only by the holder of the lock.
- ``lock``: an exclusive ``flock``; its holder trains the next segment. The OS releases
  it when the holder dies, so a crashed trial never blocks the others. (A lock under the
  storage path needs a file system with working ``flock``: local disk or NFSv4.)
- ``segment-<start>-<end>/``: the Ray Train run of one segment and its checkpoints.

A cell whose branch point is missing takes the lock and trains the trunk from the latest
checkpoint at or before its branch point through every missing branch point up to the
next existing checkpoint; concurrent cells wait for the catalog instead of training the
same steps again.

The ledger: each cell's ``train_flops`` is what the cell would cost alone; the compute
actually spent (trunk segments plus cooldowns) is counted by the trials that ran it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from annealscale.anneal.mixture import domain_counts
from annealscale.anneal.schedule import branch_step
from annealscale.core.hashing import content_hash
from annealscale.tune.cells import shared_identity
from annealscale.tune.plans import CellPlan, InputsIdentity, SweepPlan, TrunkPlan
from annealscale.tune.spec import ExperimentSpec

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Branch:
    path: str
    """The trunk checkpoint directory at ``TrunkPlan.branch_step``."""
    trained_steps: int
    """Trunk steps this trial trained itself (0 when another trial had trained them)."""


def attach_trunks(spec: ExperimentSpec, plan: SweepPlan, inputs: InputsIdentity) -> SweepPlan:
    """Set each cell's periodic checkpoint interval and, for a WSD spec with
    ``share_trunk``, its trunk.

    The cells of one trunk read the same replay stream: its length is set by the largest
    budget of the grid, rounded up to a power of two of batches so that a later sweep with
    a somewhat larger budget still extends the same trunk. The replay read is ordered and
    seeded, so every cell of the trunk sees exactly the rows an independent run with that
    stream would see.
    """
    per_step = spec.train.tokens_per_step
    every = spec.checkpoint.interval_steps(per_step)
    schedule = spec.schedule
    wsd = schedule.kind == "wsd" and schedule.share_trunk
    replay_rows = _replay_rows(spec) if wsd else None
    groups: dict[str, list[int]] = {}
    keyed = []
    for cell_plan in plan.cells:
        job = dataclasses.replace(cell_plan.job, checkpoint_every=every)
        if spec.retention.keep_final:  # the final checkpoint is what retention keeps
            job = dataclasses.replace(job, checkpoint_steps=(*job.checkpoint_steps, job.steps))
        branch = branch_step(job.steps, schedule.cooldown_fraction) if wsd else 0
        if branch <= 0:
            keyed.append((cell_plan, job, None, branch))
            continue
        cell = cell_plan.cell
        key = content_hash(
            [
                "wsd-trunk",
                shared_identity(spec),
                inputs.shared,
                cell.source_identity,
                inputs.per_source.get(cell.source, ""),
                cell.curation_spend,
                cell.seed,
                replay_rows,
            ]
        )
        groups.setdefault(key, []).append(branch)
        keyed.append((cell_plan, job, key, branch))
    cells = []
    for cell_plan, job, key, branch in keyed:
        cell_plan = dataclasses.replace(cell_plan, checkpoints_kept=spec.checkpoint.keep)
        if key is None:
            cells.append(dataclasses.replace(cell_plan, job=job))
            continue
        trunk = TrunkPlan(
            identity=key,
            branch_step=branch,
            targets=tuple(sorted(set(groups[key]))),
            tokens_per_step=per_step,
        )
        cells.append(dataclasses.replace(cell_plan, job=job, replay_rows=replay_rows, trunk=trunk))
    return dataclasses.replace(plan, cells=cells)


def _replay_rows(spec: ExperimentSpec) -> int:
    """Replay rows a trunk's stream holds: enough for the grid's largest budget."""
    batch = spec.train.batch_size
    steps = max(spec.grid.train_tokens) // spec.train.tokens_per_step
    batches = 2 ** math.ceil(math.log2(steps + 1))
    domain = int(domain_counts(1, batches * batch, spec.domain_fraction).sum())
    return batches * batch - domain + batch


TrainSegment = Callable[[object, str, str], object]
"""``train(job, run_name, storage_path)`` runs a Ray Train run and returns its Result."""


def obtain_branch(cell_plan: CellPlan, trunks_root: str | Path, train: TrainSegment) -> Branch:
    """The trunk checkpoint ``cell_plan`` branches from, training the trunk if needed.

    Returns once the checkpoint exists; trains at most one segment itself, and only while
    holding the trunk's lock, so no trunk step is ever trained twice by concurrent cells.
    """
    trunk = cell_plan.trunk
    root = Path(trunks_root) / trunk.identity
    root.mkdir(parents=True, exist_ok=True)
    trained = 0
    while True:
        catalog = read_catalog(root)
        path = catalog["checkpoints"].get(str(trunk.branch_step))
        if path is not None:
            return Branch(path=path, trained_steps=trained)
        with _try_lock(root / "lock") as held:
            if not held:
                time.sleep(POLL_SECONDS)
                continue
            catalog = read_catalog(root)
            if str(trunk.branch_step) in catalog["checkpoints"]:
                continue
            trained += _train_segment(cell_plan, root, catalog, train)


def _train_segment(cell_plan: CellPlan, root: Path, catalog: dict, train: TrainSegment) -> int:
    trunk = cell_plan.trunk
    have = [int(s) for s in catalog["checkpoints"]]
    start, targets = next_segment(have, trunk.branch_step, trunk.targets)
    end = targets[-1]
    job = dataclasses.replace(
        cell_plan.job,
        steps=end,
        trunk=True,
        checkpoint_steps=targets,
        start_checkpoint=catalog["checkpoints"].get(str(start)),
        branch_step=start,
    )
    name = f"segment-{start:08d}-{end:08d}"
    log.info(
        "trunk %s: training steps %d to %d (branch points %s)",
        trunk.identity,
        start,
        end,
        list(targets),
    )
    result = train(job, name, str(root))
    found = {}
    for checkpoint, metrics in result.best_checkpoints or []:
        step = int(metrics.get("step", -1))
        if step in targets:
            found[str(step)] = checkpoint.path
        else:  # periodic recovery checkpoints are not branch points
            shutil.rmtree(checkpoint.path, ignore_errors=True)
    missing = [t for t in targets if str(t) not in found]
    if missing:
        raise RuntimeError(f"trunk segment {name} reported no checkpoint at steps {missing}")
    catalog = read_catalog(root)
    catalog["checkpoints"].update(found)
    catalog["segments"].append(
        {
            "start": start,
            "end": end,
            "tokens": (end - start) * trunk.tokens_per_step,
            "trained_at": time.time(),
        }
    )
    _write_catalog(root, catalog)
    return end - start


def next_segment(
    have: list[int], branch: int, targets: tuple[int, ...]
) -> tuple[int, tuple[int, ...]]:
    """The trunk segment a cell needing ``branch`` trains: ``(start, branch points)``.

    It starts from the latest existing checkpoint at or before ``branch`` (0: the base
    model) and runs through every missing branch point up to the next existing
    checkpoint, so no step between existing checkpoints is trained twice.
    """
    start = max((s for s in have if s <= branch), default=0)
    stop = min((s for s in have if s > start), default=math.inf)
    missing = sorted({*targets, branch} - set(have))
    return start, tuple(t for t in missing if start < t < stop)


def read_catalog(root: Path) -> dict:
    path = Path(root) / "catalog.json"
    if not path.exists():
        return {"checkpoints": {}, "segments": []}
    return json.loads(path.read_text())


def _write_catalog(root: Path, catalog: dict) -> None:
    tmp = root / f".catalog.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(catalog, indent=2))
    os.replace(tmp, root / "catalog.json")


@contextmanager
def _try_lock(path: Path):
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def planned_train_steps(spec: ExperimentSpec) -> tuple[int, int]:
    """Optimizer steps the spec's grid trains with trunk sharing, and each cell alone.

    With sharing each (source, spend, seed) trains its trunk once up to the largest branch
    point plus every budget's cooldown; a budget whose cooldown starts at step 0 trains
    alone. For the demo's budget spacing this is the saving the sweep should report.
    """
    per_step = spec.train.tokens_per_step
    steps = [tokens // per_step for tokens in spec.grid.train_tokens]
    alone = sum(steps)
    if spec.schedule.kind != "wsd" or not spec.schedule.share_trunk:
        shared = alone
    else:
        branches = [branch_step(s, spec.schedule.cooldown_fraction) for s in steps]
        shared = max(branches) + sum(s - b for s, b in zip(steps, branches, strict=True))
    groups = sum(len(spec.spends_for(source)) for source in spec.sources) * len(spec.grid.seeds)
    return shared * groups, alone * groups
