"""Restoring from a checkpoint on remote storage: each rank fetches only what it loads.

Ray Train merges every rank's checkpoint files into one directory on storage
(`anneal.checkpoint`). ``Checkpoint.as_directory()`` copies that whole directory to the
node; for a multi-node ZeRO cell on ``s3://`` or ``gs://`` each node would then download
the optimizer shards of every rank (an 8B ZeRO-1/2 checkpoint is about 112 GB, of which
96 GB are the ranks' optimizer shards).

What a rank's DeepSpeed load reads (``DeepSpeedEngine.load_checkpoint`` with our tag,
DeepSpeed 0.19; ``elastic_checkpoint``, which our configs never turn on, would read every
shard):

- ``<tag>/mp_rank_00_model_states.pt``: the module's weights under ZeRO-0/1/2, shared;
- ``<tag>/zero_pp_rank_<r>_mp_rank_00_model_states.pt``: rank ``r``'s weights under
  ZeRO-3;
- ``<tag>/[bf16_]zero_pp_rank_<r>_mp_rank_00_optim_states.pt``: rank ``r``'s optimizer
  shard;
- our own ``worker-<r>.json`` and ``rng-<r>.pt``.

So a file whose name carries another rank's number is skipped and every other file
(shared weights, ``latest``, ``zero_to_fp32.py``, Ray's ``.metadata.json``) is fetched:
an unknown file is fetched rather than missed. When the shard names do not cover exactly
ranks ``0..world_size-1`` (a checkpoint written by another world size) every file is
fetched and DeepSpeed reports the mismatch itself.

Ranks on one node share one local directory per checkpoint, so a shared file is
downloaded once per node (a per-file lock), and each rank's shards once. The directory is
deleted when the last rank on the node leaves it (per-rank lock files, as
``Checkpoint.as_directory`` does). Local checkpoints (``pyarrow.fs.LocalFileSystem``) are
used in place, as before.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

RANK_FILE = re.compile(
    r"^(?:(?:bf16_)?zero_pp_rank_(?P<zero>\d+)_"  # DeepSpeed ZeRO shards (weights, optimizer)
    r"|worker-(?P<worker>\d+)\.json$"  # anneal.checkpoint: where the rank stands
    r"|rng-(?P<rng>\d+)\.pt$)"  # anneal.checkpoint: the rank's RNG states
)
"""File names owned by one rank, its number in the matching group."""

USERS = ".users"
"""Subdirectory of a node's restore directory holding one marker file per rank using it."""
LOCKS = ".locks"
"""Subdirectory of a node's restore directory holding the per-file download locks."""


@dataclass(frozen=True)
class Fetched:
    """What one rank's restore made local."""

    directory: str
    """Local directory holding the checkpoint's files this rank needs."""
    files: tuple[str, ...]
    """Paths relative to the checkpoint that this rank needs."""
    copied: tuple[str, ...]
    """Those this rank downloaded (the rest another rank on the node already had)."""


def file_rank(name: str) -> int | None:
    """The rank owning file ``name`` (a base name), or None for a file every rank reads."""
    match = RANK_FILE.match(name)
    if match is None:
        return None
    return int(next(group for group in match.groups() if group is not None))


def files_for_rank(relative_paths: Iterable[str], rank: int, world_size: int) -> list[str]:
    """The checkpoint files (paths relative to its root) rank ``rank`` of ``world_size``
    loads: shared files and its own, or every file when the checkpoint's per-rank files
    were not written by exactly ``world_size`` ranks."""
    paths = sorted(relative_paths)
    matches = {p: RANK_FILE.match(p.rsplit("/", 1)[-1]) for p in paths}
    shard_ranks = {int(m["zero"]) for m in matches.values() if m is not None and m["zero"]}
    if shard_ranks and shard_ranks != set(range(world_size)):
        return paths
    return [p for p in paths if file_rank(p.rsplit("/", 1)[-1]) in (None, rank)]


def list_files(filesystem: pafs.FileSystem, path: str) -> list[str]:
    """Every file under ``path`` on ``filesystem``, relative to ``path``."""
    root = path.rstrip("/")
    infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    # some filesystems (fsspec's through PyFileSystem) list paths with a leading "/"
    prefix = root.lstrip("/") + "/"
    files = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        listed = info.path.lstrip("/")
        if not listed.startswith(prefix):  # never skip a file silently
            raise ValueError(f"{filesystem.type_name} listed {info.path} outside {path}")
        files.append(listed[len(prefix) :])
    return files


def node_directory(filesystem: pafs.FileSystem, path: str, local_root: str | None) -> Path:
    """The local directory every rank on this node restores checkpoint ``path`` into."""
    key = hashlib.sha256(f"{filesystem.type_name}:{path}".encode()).hexdigest()[:16]
    return Path(local_root or tempfile.gettempdir()) / f"annealscale-restore-{key}"


def fetch(
    filesystem: pafs.FileSystem, path: str, relative: Iterable[str], directory: Path
) -> list[str]:
    """Copy the files ``relative`` (paths under ``path``) into ``directory`` unless already
    there; the ones this call copied. A file is written under a temporary name and renamed,
    under a per-file lock, so ranks sharing ``directory`` never read half a file."""
    from filelock import FileLock

    copied = []
    local = pafs.LocalFileSystem()
    locks = directory / LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    for name in relative:
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        # lock files stay until the directory goes: unlinking one a waiter has open would
        # let two ranks hold "the" lock
        with FileLock(locks / (name.replace("/", "__") + ".lock")):
            if target.exists():
                continue
            partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
            pafs.copy_files(
                f"{path.rstrip('/')}/{name}",
                str(partial),
                source_filesystem=filesystem,
                destination_filesystem=local,
            )
            partial.rename(target)
            copied.append(name)
    return copied


@contextmanager
def fetched_for_rank(
    filesystem: pafs.FileSystem,
    path: str,
    *,
    rank: int,
    world_size: int,
    local_root: str | None = None,
) -> Iterator[Fetched]:
    """The files of checkpoint ``path`` on ``filesystem`` that ``rank`` loads, in a local
    directory shared by the node's ranks (under ``local_root``, default the temp
    directory) for the duration of the context."""
    directory = node_directory(filesystem, path, local_root)
    users = directory / USERS
    users.mkdir(parents=True, exist_ok=True)
    mine = users / f"{os.getpid()}-{rank}"
    mine.touch()
    try:
        needed = files_for_rank(list_files(filesystem, path), rank, world_size)
        copied = fetch(filesystem, path, needed, directory)
        yield Fetched(directory=str(directory), files=tuple(needed), copied=tuple(copied))
    finally:
        mine.unlink(missing_ok=True)
        # the ranks of one node load together (DeepSpeed's load runs collectives), so the
        # last one out finds no other user and no rank is still between mkdir and touch
        if not any(users.iterdir()):
            shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def restored_directory(
    checkpoint, *, rank: int, world_size: int, local_root: str | None = None
) -> Iterator[str]:
    """``checkpoint`` (a ``ray.train.Checkpoint``) as a local directory holding what rank
    ``rank`` of ``world_size`` loads: the checkpoint itself when it is on the local
    filesystem, else only the shared files and this rank's own (fetched under
    ``local_root``, default the temp directory)."""
    if isinstance(checkpoint.filesystem, pafs.LocalFileSystem):
        with checkpoint.as_directory() as directory:
            yield directory
        return
    with fetched_for_rank(
        checkpoint.filesystem,
        checkpoint.path,
        rank=rank,
        world_size=world_size,
        local_root=local_root,
    ) as fetched:
        yield fetched.directory
