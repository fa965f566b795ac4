"""Identities: a short, stable hash of canonical JSON over what determines a result.

Specs, cells, pools and packed sets are all found by such a hash, so a rerun of the same
work is a no-op and changed inputs never reuse stale outputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def to_plain(obj: Any) -> Any:
    """A JSON-ready copy: spec models and dataclasses to dicts, tuples to lists.

    Every declared field is kept, defaults included, so that the hash of a spec does not
    depend on whether a default was written out.
    """
    fields = getattr(type(obj), "model_fields", None)  # a pydantic model (the spec models)
    if fields is not None and not isinstance(obj, type):
        return {name: to_plain(getattr(obj, name)) for name in fields}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    return obj


def content_hash(obj: Any, length: int = 12) -> str:
    """Short stable hash of canonical JSON: the identity of a spec or a derived artefact."""
    blob = json.dumps(to_plain(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def source_hash(paths: Iterable[Path]) -> str:
    """Short hash of source files' names and bytes: the version of the code a kept result
    was computed by, so that a change to that code computes it anew."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
