"""The test-side kustomize renderer (kustomize_render.py) does what kustomize does."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
KUSTOMIZATIONS = sorted(str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml"))


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


BASE = {
    "base/kustomization.yaml": """
        resources: [app.yaml]
        configMapGenerator:
          - name: conf
            files: [spec.yaml, renamed.yaml=other.yaml]
            literals: [mode=dev]
        generatorOptions:
          disableNameSuffixHash: true
          labels: {generated: "yes"}
    """,
    "base/app.yaml": """
        apiVersion: ray.io/v1
        kind: RayCluster
        metadata: {name: app, labels: {tier: base}}
        spec:
          headGroupSpec:
            template:
              spec:
                containers: [{name: head, image: "reg.io:5000/team/app:1.0-cpu"}]
          workerGroupSpecs:
            - groupName: gpu
              template:
                spec:
                  initContainers: [{name: init, image: other:2}]
                  containers:
                    - name: w
                      image: reg.io:5000/team/app:1.0-gpu
                      resources: {limits: {nvidia.com/gpu: 1}}
    """,
    "base/spec.yaml": "a: 1\n",
    "base/other.yaml": "b: 2\n",
}


def test_renders_resources_generators_patches_labels_images(tmp_path, kustomize):
    root = _write(
        tmp_path,
        {
            **BASE,
            "overlay/kustomization.yaml": """
                resources: [../base]
                configMapGenerator:
                  - name: conf
                    behavior: replace
                    files: [spec.yaml]
                generatorOptions: {disableNameSuffixHash: true}
                patches:
                  - path: patch.yaml
                    target: {group: ray.io, version: v1, kind: RayCluster, name: app}
                labels:
                  - pairs: {env: dev}
                images:
                  - {name: reg.io:5000/team/app, newName: mirror/app}
                  - {name: other, newTag: "3"}
            """,
            "overlay/spec.yaml": "a: 2\n",
            "overlay/patch.yaml": """
                - {op: replace, path: /spec/workerGroupSpecs/0/template/spec/containers/0/resources/limits/nvidia.com~1gpu, value: 4}
                - {op: add, path: /spec/workerGroupSpecs/0/minReplicas, value: 1}
                - {op: add, path: /spec/workerGroupSpecs/-, value: {groupName: extra}}
                - {op: remove, path: /metadata/labels/tier}
            """,
        },
    )
    objs = {o["kind"]: o for o in kustomize.render(root / "overlay")}
    conf, app = objs["ConfigMap"], objs["RayCluster"]
    assert conf["data"] == {"spec.yaml": "a: 2\n"}  # replace drops the base's keys
    assert conf["metadata"]["labels"] == {"generated": "yes", "env": "dev"}
    group = app["spec"]["workerGroupSpecs"][0]
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"] == {"nvidia.com/gpu": 4}
    assert worker["image"] == "mirror/app:1.0-gpu"
    assert group["template"]["spec"]["initContainers"][0]["image"] == "other:3"
    assert group["minReplicas"] == 1
    assert app["spec"]["workerGroupSpecs"][1] == {"groupName": "extra"}
    assert app["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == (
        "mirror/app:1.0-cpu"
    )
    assert app["metadata"]["labels"] == {"env": "dev"}

    base = {o["kind"]: o for o in kustomize.render(root / "base")}
    assert base["ConfigMap"]["data"] == {
        "spec.yaml": "a: 1\n",
        "renamed.yaml": "b: 2\n",
        "mode": "dev",
    }
    assert base["RayCluster"]["metadata"]["labels"] == {"tier": "base"}  # base is untouched


@pytest.mark.parametrize(
    ("kustomization", "error"),
    [
        ("namePrefix: x-\nresources: [../base]\n", "Unsupported"),
        ("resources: [../base]\ncommonLabels: {a: b}\n", "Unsupported"),
        (
            "resources: [../base]\nlabels: [{pairs: {a: b}, includeSelectors: true}]\n",
            "Unsupported",
        ),
        ("resources: [https://example.com/x.yaml]\n", "Unsupported"),
        (
            "resources: [../base]\npatches: [{patch: 'metadata: {name: app}', target: {kind: RayCluster}}]\n",
            "Unsupported",
        ),
        ("resources: [../base]\nconfigMapGenerator: [{name: n, literals: [a=b]}]\n", "Unsupported"),
        (
            "resources: [../base]\npatches: [{patch: '[{op: replace, path: /spec/nope, value: 1}]', target: {kind: RayCluster}}]\n",
            "RenderError",
        ),
        (
            "resources: [../base]\npatches: [{patch: '[{op: remove, path: /spec/x}]', target: {kind: RayJob}}]\n",
            "RenderError",
        ),
        ("resources: [../base, ../base/app.yaml]\n", "RenderError"),
        (
            "resources: [../base]\nconfigMapGenerator: [{name: conf, files: [../base/spec.yaml]}]\ngeneratorOptions: {disableNameSuffixHash: true}\n",
            "RenderError",
        ),
        ("resources: [missing.yaml]\n", "RenderError"),
    ],
)
def test_refuses_what_it_does_not_render_and_broken_kustomizations(
    tmp_path, kustomize, kustomization, error
):
    root = _write(tmp_path, {**BASE, "overlay/kustomization.yaml": kustomization})
    with pytest.raises(getattr(kustomize, error)):
        kustomize.render(root / "overlay")


def test_json6902_operations_and_pointer_escapes(kustomize):
    doc = {"a": {"b/c": 1, "d~e": [1, 2, 3]}}
    ops = [
        {"op": "test", "path": "/a/b~1c", "value": 1},
        {"op": "copy", "from": "/a/b~1c", "path": "/x"},
        {"op": "move", "from": "/a/d~0e/0", "path": "/a/d~0e/-"},
        {"op": "replace", "path": "/a/d~0e/0", "value": 9},
        {"op": "remove", "path": "/a/b~1c"},
    ]
    assert kustomize.apply_json6902(doc, ops) == {"a": {"d~e": [9, 3, 1]}, "x": 1}
    assert doc == {"a": {"b/c": 1, "d~e": [1, 2, 3]}}  # the input is not modified
    with pytest.raises(kustomize.RenderError):
        kustomize.apply_json6902(doc, [{"op": "test", "path": "/a/b~1c", "value": 2}])
    with pytest.raises(kustomize.RenderError):
        kustomize.apply_json6902(doc, [{"op": "replace", "path": "/a/d~0e/3", "value": 0}])


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("annealscale", ("annealscale", "", "")),
        ("annealscale:0.1.0-py311-cpu", ("annealscale", "0.1.0-py311-cpu", "")),
        ("reg.io:5000/a/b:tag", ("reg.io:5000/a/b", "tag", "")),
        ("reg.io:5000/a/b@sha256:ab", ("reg.io:5000/a/b", "", "sha256:ab")),
    ],
)
def test_split_image(kustomize, image, parts):
    assert kustomize.split_image(image) == parts


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.skipif(_kustomize_command() is None, reason="no kustomize or kubectl binary on PATH")
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_matches_the_real_kustomize(kustomization, kustomize):
    command = _kustomize_command() + [str(K8S / kustomization)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout

    def by_id(objs):
        return {(o["apiVersion"], o["kind"], o["metadata"]["name"]): o for o in objs}

    theirs = by_id(d for d in yaml.safe_load_all(out) if d)
    assert by_id(kustomize.render(K8S / kustomization)) == theirs
