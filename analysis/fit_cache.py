"""Fits kept on disk by their inputs, so that analysing one table again (at another target,
or `propose` after `analyze`) refits nothing.

A fit is a pure function of its points, its law, its settings and this package's code,
and the key hashes all four: a hit returns what a refit would. Only built-in laws
(`analysis.laws.LAWS`) are kept, since a user law is arbitrary code that no key can name;
a fit with settings other than plain values is not kept either.

Entries live under ``$ANNEALSCALE_CACHE/fits`` (default ``~/.cache/annealscale/fits``),
one file each, written to a temporary name and renamed (`core.durable`), so two analyses
at once never read half an entry. An entry that cannot be read is refitted and written again. Entries
neither written nor read for `MAX_UNUSED_DAYS` are deleted (once per process, when it first
writes one), so the folder does not grow without bound over months of sweeps.
``ANNEALSCALE_FIT_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from annealscale.analysis.laws import LAWS, Law, get_law
from annealscale.core import durable
from annealscale.core.cache import default_cache_dir
from annealscale.core.hashing import source_hash

T = TypeVar("T")

SWITCH = "ANNEALSCALE_FIT_CACHE"
MAX_UNUSED_DAYS = 30.0
"""Entries neither written nor read for this long are deleted."""
_swept: set[Path] = set()
"""Cache folders this process has already evicted from."""
PLAIN = (int, float, str, bool, type(None))


def remembered(
    kind: str,
    law: Law,
    arrays: tuple[np.ndarray, ...],
    settings: Mapping[str, Any],
    compute: Callable[[], T],
) -> T:
    """``compute()``, or what it returned before for the same ``kind`` of fit of ``law``
    to ``arrays`` with ``settings``."""
    key = _key(kind, law, arrays, settings)
    if key is None:
        return compute()
    root = cache_dir()
    path = root / key[:2] / f"{key}.pkl"
    try:
        value = pickle.loads(path.read_bytes())
    except Exception:  # noqa: BLE001 - missing, torn or stale: fit again
        pass
    else:
        _mark_used(path)
        return value
    value = compute()
    _write(path, value)
    if root not in _swept:
        _swept.add(root)
        evict_unused(root)
    return value


def evict_unused(root: Path, max_unused_days: float = MAX_UNUSED_DAYS) -> int:
    """Delete the entries under ``root`` neither written nor read for ``max_unused_days``;
    how many were deleted. Runs once per process, at its first new entry."""
    cutoff = time.time() - max_unused_days * 86400.0
    deleted = 0
    for path in Path(root).glob("*/*.pkl"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
        except OSError:  # another process removed or rewrote it meanwhile
            continue
    return deleted


def _mark_used(path: Path) -> None:
    """Set the entry's times to now: its modification time says when it was last written
    or read (a rewrite is a new file, renamed over the old one)."""
    try:
        os.utime(path)
    except OSError:
        pass


def cache_dir() -> Path:
    return default_cache_dir() / "fits"


def _key(kind: str, law: Law, arrays, settings: Mapping[str, Any]) -> str | None:
    if os.environ.get(SWITCH, "1") == "0" or LAWS.get(law.name) is not law:
        return None
    plain = {}
    for name, value in sorted(settings.items()):
        if isinstance(value, (tuple, list)) and all(isinstance(v, PLAIN) for v in value):
            value = tuple(value)
        elif not isinstance(value, PLAIN):
            return None
        plain[name] = value
    digest = hashlib.sha256()
    digest.update(f"{code_version()}|{kind}|{law.name}|{plain!r}".encode())
    for array in arrays:
        array = np.ascontiguousarray(array, dtype=np.float64)
        digest.update(repr(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@functools.cache
def code_version() -> str:
    """Hash of this package's source: any change to the analysis code is a new cache."""
    return source_hash(Path(__file__).parent.glob("*.py"))


class _Pickler(pickle.Pickler):
    """Stores a law by its registry name, so a loaded fit holds the registry's own law."""

    def reducer_override(self, obj):
        if isinstance(obj, Law):
            return get_law, (obj.name,)
        return NotImplemented


def _write(path: Path, value: Any) -> None:
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    except Exception:  # noqa: BLE001 - an unpicklable result is simply not kept
        return
    try:
        durable.write_bytes(path, buffer.getvalue())
    except OSError:  # a read-only or full cache costs speed, never the analysis
        return
