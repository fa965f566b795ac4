"""annealscale: choose domain data sources for annealing by fitting scaling laws to many
small Ray-scheduled anneals.

The four layers import as ``annealscale.cluster`` (where it runs, the CLI),
``annealscale.tune`` (the sweep), ``annealscale.anneal`` (one anneal) and
``annealscale.analysis`` (pure numerics on the results table); ``annealscale.core`` holds
what all of them share: the project error, the spec base model, content hashing and units.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("annealscale")
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"
