"""Where annealscale keeps what it can rebuild: demo assets, staged storage, fits."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$ANNEALSCALE_CACHE``, default ``~/.cache/annealscale``."""
    return Path(os.environ.get("ANNEALSCALE_CACHE", Path.home() / ".cache" / "annealscale"))
