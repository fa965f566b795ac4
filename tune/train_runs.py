"""A cell's Ray Train run, checked before it is resumed: a damaged checkpoint is never loaded.

A retried or resumed trial resumes its Train run (``<train storage>/cell-<identity>/``)
from the latest checkpoint Ray Train registered there. If a checkpoint of that run cannot
be read whole (a file truncated by a crash, a full disk or a copy cut short), every restart
would fail on it again; instead the run is moved aside to ``<train storage>/.corrupt/``
with a warning, and the cell starts again from its base (or trunk) checkpoint.

Checked: the ``worker-<rank>.json`` states parse, and every ``.pt`` file (DeepSpeed's
model and optimizer states, the RNG states; zip archives) passes its CRC check. Local or
mounted storage only; a run in an object store is left to Ray Train.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from pathlib import Path

from annealscale.tune.storage import is_uri

log = logging.getLogger(__name__)


def damage(checkpoint: Path) -> str | None:
    """What is wrong with the checkpoint directory ``checkpoint``, or None if it reads."""
    states = list(checkpoint.glob("worker-*.json"))
    if not states:
        return "no worker state file"
    for state in states:
        try:
            json.loads(state.read_text())
        except (OSError, ValueError):
            return f"{state.name} does not parse"
    for archive in checkpoint.rglob("*.pt"):
        try:
            with zipfile.ZipFile(archive) as z:
                bad = z.testzip()
        except (OSError, zipfile.BadZipFile, EOFError) as err:
            return f"{archive.relative_to(checkpoint)} is damaged ({err})"
        if bad is not None:
            return f"{archive.relative_to(checkpoint)} is damaged (bad CRC in {bad})"
    return None


def registered_checkpoints(run: Path) -> list[Path]:
    """Checkpoint directories registered for the run: by Ray Train (its snapshot file), or
    by a warm single-worker cell (`tune.warm`: those marked complete)."""
    from annealscale.tune.warm import COMPLETE

    try:
        snapshot = json.loads((run / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):
        return sorted(marker.parent for marker in run.glob(f"*/{COMPLETE}"))
    names = [r.get("checkpoint_dir_name") for r in snapshot.get("checkpoint_results", [])]
    return [run / n for n in names if n]


def set_aside_if_damaged(train_storage: str, name: str) -> str | None:
    """Move the Train run ``name`` aside if one of its registered checkpoints is damaged;
    returns the reason, or None when the run is whole (or absent, or not local)."""
    if is_uri(train_storage) and not train_storage.startswith("file://"):
        return None
    run = Path(train_storage.removeprefix("file://")) / name
    for checkpoint in registered_checkpoints(run):
        if not checkpoint.is_dir():
            why = f"{checkpoint.name} is missing"
        else:
            why = damage(checkpoint)
        if why is None:
            continue
        aside = run.parent / ".corrupt" / f"{name}.{int(time.time())}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        run.rename(aside)
        log.warning(
            "%s: checkpoint %s; the run is moved to %s and the cell starts again",
            name,
            why,
            aside,
        )
        return why
    return None
