"""Fixtures for the manifest tests: the renderer, the schemas and the rendered overlays."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
K8S = REPO / "k8s"
# Vendored KubeRay CRDs (source, commit and licence in crds/README.md): no test reads
# outside the repository.
CRD_DIR = HERE / "crds"


def load_helper(name: str) -> ModuleType:
    """Import tests/k8s/<name>.py (pytest runs with --import-mode=importlib, no sys.path)."""
    qualified = f"annealscale_tests_k8s_{name}"
    if qualified not in sys.modules:
        spec = importlib.util.spec_from_file_location(qualified, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        spec.loader.exec_module(module)
    return sys.modules[qualified]


@pytest.fixture(scope="session")
def kustomize() -> ModuleType:
    return load_helper("kustomize_render")


@pytest.fixture(scope="session")
def schemas() -> ModuleType:
    return load_helper("schemas")


@pytest.fixture(scope="session")
def validator(schemas):
    return schemas.Validator(CRD_DIR)


@pytest.fixture(scope="session")
def rendered(kustomize) -> dict[str, list[dict]]:
    """Every kustomization under k8s/, rendered: {"base": [...], "overlays/dev-cpu": [...]}."""
    out = {}
    for kfile in sorted(K8S.rglob("kustomization.yaml")):
        out[str(kfile.parent.relative_to(K8S))] = kustomize.render(kfile.parent)
    return out
