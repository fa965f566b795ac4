"""Where a sweep's artefacts live under ``storage_path``, local or in an object store.

Layout, by identity, so sweeps sharing a storage path share finished work and never
overwrite each other's::

    <storage>/results/cells/<cell identity>.parquet    finished rows (written once)
    <storage>/results/failed/<cell identity>.parquet   the latest failure of a cell
    <storage>/train/cell-<cell identity>/              Ray Train runs and checkpoints
    <storage>/tune/<spec name>-<grid hash>/            Ray Tune experiment (for --resume)
    <storage>/trunks/<trunk identity>/                 WSD trunk segments and their lock
    <storage>/cache/                                   curated pools and packed data

``s3://`` and ``gs://`` URIs go through pyarrow filesystems (Ray Tune and Train accept the
same URIs). Curation and packing write with local file operations, so for a URI their
cache, and WSD trunks (which need a file lock), stay on local disk
(``$ANNEALSCALE_CACHE/storage/<hash>``); results, Tune state and cell checkpoints go to the
URI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from annealscale.core.errors import AnnealscaleError
from annealscale.core.hashing import content_hash


def is_uri(path: str) -> bool:
    return "://" in path


@dataclass(frozen=True)
class StorageLayout:
    root: str
    """Absolute local path or URI."""

    @classmethod
    def of(cls, storage_path: str) -> StorageLayout:
        if is_uri(storage_path):
            scheme = storage_path.split("://", 1)[0]
            if scheme == "file":
                return cls(str(Path(storage_path[len("file://") :]).resolve()))
            return cls(storage_path.rstrip("/"))
        return cls(str(Path(storage_path).expanduser().resolve()))

    def join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    @property
    def results(self) -> str:
        return self.join("results")

    @property
    def tune(self) -> str:
        return self.join("tune")

    @property
    def train(self) -> str:
        return self.join("train")

    @property
    def local_root(self) -> Path:
        """Directory whose ``cache/`` holds curated pools and packed data: the storage
        path itself, or for a URI a local stand-in (file operations; see the module doc)."""
        if not is_uri(self.root):
            return Path(self.root)
        from annealscale.core.cache import default_cache_dir

        return default_cache_dir() / "storage" / content_hash(self.root)


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding ``path`` and the path inside it."""
    if not is_uri(path):
        return pafs.LocalFileSystem(), str(Path(path).resolve())
    try:
        return pafs.FileSystem.from_uri(path)
    except (pa.ArrowInvalid, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AnnealscaleError(
            f"storage_path: cannot open {path} ({first}); use a local directory or an "
            "s3:// / gs:// URI with credentials in the environment"
        ) from None
