"""The package's dependency rule: analysis runs in a notebook on a table."""

from __future__ import annotations

import ast
from pathlib import Path

import annealscale.analysis as analysis

ALLOWED = {
    "annealscale.analysis",
    "annealscale.core",
    "numpy",
    "scipy",
    "sklearn",
    "pandas",
    "pyarrow",
    "matplotlib",
    "__future__",
    "abc",
    "base64",
    "collections",
    "dataclasses",
    "functools",
    "hashlib",
    "html",
    "io",
    "itertools",
    "json",
    "math",
    "os",
    "pathlib",
    "pickle",
    "time",
    "types",
    "typing",
    "zlib",
}


def test_analysis_imports_only_numerics_and_stdlib():
    package = Path(analysis.__file__).parent
    found = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                parts = name.split(".")
                top = ".".join(parts[:2]) if parts[0] == "annealscale" else parts[0]
                found.setdefault(top, set()).add(path.name)
    assert "numpy" in found  # the walk saw real imports
    forbidden = {m: files for m, files in found.items() if m not in ALLOWED}
    assert forbidden == {}, f"analysis must not import {forbidden}"
