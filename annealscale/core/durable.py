"""Durable local file writes: the bytes reach the disk before the name appears.

A file is written under a temporary name in its own directory, fsynced, then renamed (or,
``exclusive``, hard-linked, which fails if the name exists), and the directory is fsynced so
the new name survives a power loss too. Readers therefore see no file or the whole file,
never a torn one, and an exclusive write never replaces what another process wrote first.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this process and call (readers skip dot
    files)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def fsync(path: Path) -> None:
    """Make a file's bytes, or a directory's entries (a rename, a new name), durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, path: Path, *, exclusive: bool = False) -> bool:
    """Give the already-written file ``tmp`` the name ``path`` durably; the temporary name
    is gone afterwards. With ``exclusive``, an existing ``path`` is kept and False returned.
    """
    try:
        fsync(tmp)
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
        fsync(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes, *, exclusive: bool = False) -> bool:
    """Write ``data`` to ``path`` durably and atomically; see `publish`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return publish(tmp, path, exclusive=exclusive)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())
