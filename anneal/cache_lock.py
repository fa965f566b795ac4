"""Building a cache entry once when several processes ask for it at the same moment.

An entry (a directory named by a content hash) is built under ``<entry>.lock``: the first
process builds it into ``<entry>.tmp`` and renames it into place; the others wait on the
lock and find it built. The lock is an OS file lock (``flock``), released when its holder
dies, so a killed build never blocks the next one; whatever temporary folder it left is
stale once the lock is held, and is cleaned or (the base model's pre-training) resumed.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


@contextmanager
def building(entry: Path) -> Iterator[None]:
    """Hold ``entry``'s build lock (waiting for another builder to finish)."""
    from filelock import FileLock

    entry.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(entry.with_name(entry.name + ".lock")))
    if lock.is_locked:
        log.info("%s: another process is building it; waiting", entry.name)
    with lock:
        yield


def temp_dir(entry: Path, *, keep: bool = False) -> Path:
    """``entry``'s temporary build folder, emptied unless ``keep`` (call with the lock)."""
    tmp = entry.with_name(entry.name + ".tmp")
    if tmp.exists() and not keep:
        log.info("%s: removing a stale build folder left by an interrupted run", tmp.name)
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp
