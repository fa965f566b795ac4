"""The offline demo corpus: real technical English from the docstrings of installed packages.

Nothing is downloaded. Math-heavy packages (sympy, mpmath, scipy) make the *math* domain;
the standard library and general-purpose packages make the *general* pool that the base
model is pre-trained on and that anneals replay, so the domain is under-represented in
pre-training, as math is in web-scale pre-training. Held-out evaluation documents come
from whole modules set aside by a hash of the module name, so no evaluation module
contributes a single document to pre-training, replay or any source.

Splits written (Parquet, columns ``doc_id, package, module, text``):

- ``general_train`` / ``general_eval``: general packages, split by module.
- ``math_train`` / ``math_eval``: math packages, split by module.
- ``web``: ``general_train`` and ``math_train`` interleaved in a fixed shuffled order, the
  raw crawl that a classifier-filter source scores.
- ``math_seed`` / ``general_seed``: small labelled samples used to train that classifier.

The builder is deterministic given the installed package versions, which the manifest
records together with document counts and content hashes.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from annealscale.anneal.cache_lock import building, temp_dir
from annealscale.core.errors import AnnealscaleError

log = logging.getLogger(__name__)

MATH_PACKAGES = ("sympy", "mpmath", "scipy")
GENERAL_PACKAGES = ("stdlib", "pandas", "sklearn", "matplotlib", "ray", "transformers", "yaml")
SPLITS = (
    "general_train",
    "general_eval",
    "math_train",
    "math_eval",
    "web",
    "math_seed",
    "general_seed",
)
CORPUS_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class DemoCorpusConfig:
    """What goes into the demo corpus; its hash names the cache directory."""

    math_packages: tuple[str, ...] = MATH_PACKAGES
    general_packages: tuple[str, ...] = GENERAL_PACKAGES
    min_chars: int = 200
    """Docstrings shorter than this (characters) are dropped as uninformative."""
    max_chars: int = 6000
    """Longer docstrings are cut to this many characters."""
    max_docs_per_package: int = 4000
    """Cap per package (documents), so the corpus builds in about a minute."""
    eval_module_fraction: float = 0.1
    """Fraction of modules held out for evaluation (chosen by module-name hash)."""
    seed_docs: int = 300
    """Documents per class in the labelled seed samples for the classifier."""


@dataclass(frozen=True)
class DemoCorpus:
    """Paths of a built demo corpus."""

    root: Path

    def split(self, name: str) -> Path:
        if name not in SPLITS:
            raise AnnealscaleError(f"demo corpus has no split '{name}'; known: {', '.join(SPLITS)}")
        return self.root / f"{name}.parquet"

    @property
    def manifest(self) -> dict:
        return json.loads((self.root / "manifest.json").read_text())


def build_demo_corpus(cache_dir: Path, config: DemoCorpusConfig | None = None) -> DemoCorpus:
    """Build (or find cached) the demo corpus under ``cache_dir`` and return its paths."""
    config = config or DemoCorpusConfig()
    versions = {p: _package_version(p) for p in config.math_packages + config.general_packages}
    key = _hash({"config": config.__dict__, "versions": versions, "v": CORPUS_VERSION})
    root = Path(cache_dir) / f"corpus-{key}"
    if (root / "manifest.json").exists():
        return DemoCorpus(root)
    with building(root):
        if not (root / "manifest.json").exists():
            _build(root, config, versions)
    return DemoCorpus(root)


def _build(root: Path, config: DemoCorpusConfig, versions: dict) -> None:
    """Write the corpus into a fresh temporary folder and rename it to ``root``."""
    tmp = temp_dir(root)

    math_docs = _collect(config.math_packages, config)
    general_docs = _collect(config.general_packages, config)
    if not math_docs or not general_docs:
        raise AnnealscaleError(
            "demo corpus: found no docstrings in the installed packages "
            f"{config.math_packages + config.general_packages}; install them or reinstall annealscale"
        )
    math_train, math_eval = _split_by_module(math_docs, config.eval_module_fraction)
    general_train, general_eval = _split_by_module(general_docs, config.eval_module_fraction)
    web = sorted(math_train + general_train, key=lambda d: _hash(["web", d["doc_id"]]))
    by_seed = lambda name: lambda d: _hash([name, d["doc_id"]])  # noqa: E731
    splits = {
        "general_train": general_train,
        "general_eval": general_eval,
        "math_train": math_train,
        "math_eval": math_eval,
        "web": web,
        "math_seed": sorted(math_train, key=by_seed("seed"))[: config.seed_docs],
        "general_seed": sorted(general_train, key=by_seed("seed"))[: config.seed_docs],
    }
    manifest = {
        "version": CORPUS_VERSION,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.__dict__.items()},
        "package_versions": versions,
        "splits": {},
    }
    for name, docs in splits.items():
        path = tmp / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(docs, schema=_SCHEMA), path)
        manifest["splits"][name] = {
            "documents": len(docs),
            "characters": sum(len(d["text"]) for d in docs),
            "modules": len({d["module"] for d in docs}),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if root.exists():  # a folder without a manifest: an interrupted build of old code
        shutil.rmtree(root)
    os.replace(tmp, root)


_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("package", pa.string()),
        ("module", pa.string()),
        ("text", pa.string()),
    ]
)


def _collect(packages: tuple[str, ...], config: DemoCorpusConfig) -> list[dict]:
    docs: list[dict] = []
    seen: set[str] = set()
    for package in packages:
        count = 0
        for module, path in _module_files(package):
            for qualname, text in _docstrings(path, config):
                digest = hashlib.sha1(text.encode()).hexdigest()
                if digest in seen:
                    continue
                seen.add(digest)
                docs.append(
                    {
                        "doc_id": f"{module}:{qualname}",
                        "package": package,
                        "module": module,
                        "text": text,
                    }
                )
                count += 1
                if count >= config.max_docs_per_package:
                    break
            if count >= config.max_docs_per_package:
                break
        log.info("demo corpus: %d docstrings from %s", count, package)
    return docs


def _module_files(package: str) -> Iterator[tuple[str, Path]]:
    """(module name, file) pairs of a package in sorted order, tests excluded."""
    if package == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        prefix = ""
        skip = {"site-packages", "test", "tests", "idlelib", "lib2to3", "ensurepip", "tkinter"}
    else:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            log.warning("demo corpus: package %s is not installed; skipped", package)
            return
        root = Path(next(iter(spec.submodule_search_locations)))
        prefix = package + "."
        skip = {"tests", "test", "testing", "_vendor", "vendored", "externals"}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.startswith("."))
        for filename in sorted(filenames):
            if not filename.endswith(".py") or filename.startswith("test_"):
                continue
            path = Path(dirpath) / filename
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield prefix + ".".join(parts), path


def _docstrings(path: Path, config: DemoCorpusConfig) -> Iterator[tuple[str, str]]:
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return
    stack: list[tuple[str, ast.AST]] = [("", tree)]
    while stack:
        prefix, node = stack.pop(0)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            text = ast.get_docstring(node, clean=True)
            if text and len(text) >= config.min_chars:
                yield prefix or "<module>", text[: config.max_chars]
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                stack.append((f"{prefix}.{child.name}" if prefix else child.name, child))


def _split_by_module(docs: list[dict], eval_fraction: float) -> tuple[list[dict], list[dict]]:
    buckets = 1000
    held = lambda m: int(_hash(["eval", m]), 16) % buckets < eval_fraction * buckets  # noqa: E731
    train = [d for d in docs if not held(d["module"])]
    evaluation = [d for d in docs if held(d["module"])]
    return train, evaluation


def _package_version(package: str) -> str:
    if package == "stdlib":
        return sysconfig.get_python_version()
    dist = {"sklearn": "scikit-learn", "yaml": "PyYAML"}.get(package, package)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
