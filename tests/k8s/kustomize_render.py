"""A small kustomize renderer for the subset of kustomize that ``k8s/`` uses.

The manifests must be checked as ``kubectl apply -k`` would send them, and a kustomize
binary is not guaranteed on every machine that runs the tests. This renders exactly the
features below and raises :class:`Unsupported` on anything else, so an overlay cannot
quietly use a feature that the tests would render differently from kustomize:

- ``resources``: YAML files (several documents each) and directories holding a
  ``kustomization.yaml``, rendered recursively;
- ``configMapGenerator``: ``files`` (``path`` or ``key=path``) and ``literals``,
  ``behavior`` create/replace/merge, with ``generatorOptions.disableNameSuffixHash: true``
  (name hashing is not rendered) and ``generatorOptions.labels``/``annotations``;
- ``patches``: JSON 6902 patches (a YAML list of operations) from ``path`` or ``patch``,
  applied to every resource matching ``target`` (group, version, kind, name); a target
  that matches nothing is an error here (kustomize ignores it);
- ``labels``: ``pairs`` added to ``metadata.labels`` only (no selectors, no templates);
- ``images``: ``name`` -> ``newName``/``newTag``/``digest`` in every ``containers`` and
  ``initContainers`` list, at any depth (kustomize's default, which reaches into custom
  resources).

Transformers run in kustomize's order: generators, patches, labels, images.
``tests/k8s/test_kustomize.py`` compares the output with ``kubectl kustomize`` where one
is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

SUPPORTED_FIELDS = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "configMapGenerator",
        "generatorOptions",
        "patches",
        "labels",
        "images",
    }
)
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


class Unsupported(ValueError):
    """The kustomization uses a feature this renderer does not reproduce."""


class RenderError(ValueError):
    """The kustomization is wrong: a missing file, a bad patch, a clashing name."""


def kustomization_file(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    raise RenderError(f"{directory}: no kustomization.yaml")


def load_yaml_documents(path: Path) -> list[dict]:
    docs = [d for d in yaml.load_all(path.read_text(), Loader=_Loader) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise RenderError(f"{path}: every document must be an object with apiVersion and kind")
    return docs


def render(directory: str | Path) -> list[dict]:
    """Render the kustomization in ``directory`` to a list of resources."""
    directory = Path(directory).resolve()
    kfile = kustomization_file(directory)
    k = yaml.load(kfile.read_text(), Loader=_Loader) or {}
    unknown = sorted(set(k) - SUPPORTED_FIELDS)
    if unknown:
        raise Unsupported(f"{kfile}: fields not rendered by tests/k8s: {', '.join(unknown)}")
    if k.get("kind", "Kustomization") != "Kustomization":
        raise Unsupported(f"{kfile}: kind {k['kind']!r} (only Kustomization)")

    resources: list[dict] = []
    for entry in k.get("resources", []):
        if "://" in entry or entry.startswith("github.com/"):
            raise Unsupported(f"{kfile}: remote resource {entry!r}")
        path = (directory / entry).resolve()
        if path.is_dir():
            new = render(path)
        elif path.is_file():
            new = load_yaml_documents(path)
        else:
            raise RenderError(f"{kfile}: resource {entry!r} does not exist")
        for res in new:
            if _find(resources, _id(res)) is not None:
                raise RenderError(f"{kfile}: {_id(res)} is defined twice")
            resources.append(res)

    options = k.get("generatorOptions", {})
    for gen in k.get("configMapGenerator", []):
        _generate_configmap(resources, gen, options, directory, kfile)
    for patch in k.get("patches", []):
        _apply_patch_entry(resources, patch, directory, kfile)
    for entry in k.get("labels", []):
        _apply_labels(resources, entry, kfile)
    for entry in k.get("images", []):
        _apply_image(resources, entry, kfile)
    return resources


# ---------------------------------------------------------------------------- identity


def _id(res: dict) -> tuple[str, str, str]:
    return (res["apiVersion"], res["kind"], res.get("metadata", {}).get("name", ""))


def _find(resources: list[dict], rid: tuple[str, str, str]) -> int | None:
    for i, res in enumerate(resources):
        if _id(res) == rid:
            return i
    return None


def _matches(res: dict, target: dict) -> bool:
    group, _, version = res["apiVersion"].rpartition("/")
    want = {
        "group": group,
        "version": version,
        "kind": res["kind"],
        "name": res.get("metadata", {}).get("name", ""),
    }
    return all(target[key] == want[key] for key in target)


def _local_file(directory: Path, relative: str, kfile: Path) -> Path:
    # kustomize's default load restriction: files come from inside the kustomization root.
    path = (directory / relative).resolve()
    if directory not in path.parents:
        raise RenderError(f"{kfile}: {relative!r} is outside the kustomization directory")
    if not path.is_file():
        raise RenderError(f"{kfile}: file {relative!r} does not exist")
    return path


# --------------------------------------------------------------------------- generators


def _generate_configmap(
    resources: list[dict], gen: dict, options: dict, directory: Path, kfile: Path
) -> None:
    unknown = sorted(set(gen) - {"name", "files", "literals", "behavior"})
    if unknown:
        raise Unsupported(f"{kfile}: configMapGenerator fields {', '.join(unknown)}")
    unknown = sorted(set(options) - {"disableNameSuffixHash", "labels", "annotations"})
    if unknown:
        raise Unsupported(f"{kfile}: generatorOptions fields {', '.join(unknown)}")
    if options.get("disableNameSuffixHash") is not True:
        raise Unsupported(
            f"{kfile}: configMapGenerator needs generatorOptions.disableNameSuffixHash: true "
            "(name hashes are not rendered)"
        )
    data: dict[str, str] = {}
    for item in gen.get("files", []):
        key, sep, rel = item.partition("=")
        if not sep:
            key, rel = Path(item).name, item
        data[key] = _local_file(directory, rel, kfile).read_text()
    for item in gen.get("literals", []):
        key, sep, value = item.partition("=")
        if not sep:
            raise RenderError(f"{kfile}: literal {item!r} is not KEY=VALUE")
        data[key] = value
    metadata: dict[str, Any] = {"name": gen["name"]}
    if options.get("labels"):
        metadata["labels"] = dict(options["labels"])
    if options.get("annotations"):
        metadata["annotations"] = dict(options["annotations"])
    new = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}

    behavior = gen.get("behavior", "create")
    at = _find(resources, _id(new))
    if behavior == "create":
        if at is not None:
            raise RenderError(f"{kfile}: ConfigMap {gen['name']} exists; use behavior: replace")
        resources.append(new)
        return
    if behavior not in ("replace", "merge"):
        raise Unsupported(f"{kfile}: configMapGenerator behavior {behavior!r}")
    if at is None:
        raise RenderError(f"{kfile}: behavior {behavior} but no ConfigMap {gen['name']}")
    old = resources[at]
    merged = copy.deepcopy(old)
    for field in ("labels", "annotations"):
        values = {**old["metadata"].get(field, {}), **metadata.get(field, {})}
        if values:
            merged["metadata"][field] = values
    merged["data"] = data if behavior == "replace" else {**old.get("data", {}), **data}
    resources[at] = merged


# ----------------------------------------------------------------------------- patches


def _apply_patch_entry(resources: list[dict], entry: dict, directory: Path, kfile: Path) -> None:
    unknown = sorted(set(entry) - {"path", "patch", "target"})
    if unknown:
        raise Unsupported(f"{kfile}: patch fields {', '.join(unknown)}")
    if ("path" in entry) == ("patch" in entry):
        raise RenderError(f"{kfile}: a patch needs exactly one of path or patch")
    text = (
        _local_file(directory, entry["path"], kfile).read_text()
        if "path" in entry
        else entry["patch"]
    )
    ops = yaml.load(text, Loader=_Loader)
    if not isinstance(ops, list):
        raise Unsupported(f"{kfile}: only JSON 6902 patches (a list of operations) are rendered")
    target = entry.get("target")
    if not target:
        raise RenderError(f"{kfile}: a JSON 6902 patch needs a target")
    unknown = sorted(set(target) - {"group", "version", "kind", "name"})
    if unknown:
        raise Unsupported(f"{kfile}: patch target fields {', '.join(unknown)}")
    hits = [i for i, res in enumerate(resources) if _matches(res, target)]
    if not hits:
        raise RenderError(f"{kfile}: patch target {target} matches no resource")
    for i in hits:
        resources[i] = apply_json6902(resources[i], ops)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc: Any, tokens: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        node = _child(node, token, path)
    return node, tokens[-1]


def _child(node: Any, token: str, path: str) -> Any:
    if isinstance(node, dict):
        if token not in node:
            raise RenderError(f"path {path!r}: no key {token!r}")
        return node[token]
    if isinstance(node, list):
        index = _index(node, token, path)
        return node[index]
    raise RenderError(f"path {path!r}: {token!r} is below a scalar")


def _index(node: list, token: str, path: str, *, allow_end: bool = False) -> int:
    if token == "-" and allow_end:
        return len(node)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise RenderError(f"path {path!r}: {token!r} is not an array index")
    index = int(token)
    if index > len(node) or (index == len(node) and not allow_end):
        raise RenderError(f"path {path!r}: index {index} out of range")
    return index


def _get(doc: Any, path: str) -> Any:
    node = doc
    for token in _pointer(path):
        node = _child(node, token, path)
    return node


def _remove(doc: Any, path: str) -> Any:
    parent, last = _container(doc, _pointer(path), path)
    if isinstance(parent, dict):
        if last not in parent:
            raise RenderError(f"remove {path!r}: no key {last!r}")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, path))
    raise RenderError(f"remove {path!r}: parent is a scalar")


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _container(doc, tokens, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, allow_end=True), value)
    else:
        raise RenderError(f"add {path!r}: parent is a scalar")
    return doc


def apply_json6902(doc: dict, ops: list[dict]) -> dict:
    """Apply RFC 6902 operations to a copy of ``doc`` (all six operations)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = op.get("op"), op.get("path")
        if not isinstance(path, str):
            raise RenderError(f"operation {op!r} has no path")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # must exist: RFC 6902 section 4.3
            if _pointer(path):
                _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise RenderError(f"test {path!r} failed")
        else:
            raise RenderError(f"unknown JSON 6902 operation {kind!r}")
    return doc


# ------------------------------------------------------------------------- transformers


def _apply_labels(resources: list[dict], entry: dict, kfile: Path) -> None:
    unknown = sorted(set(entry) - {"pairs", "includeSelectors", "includeTemplates"})
    if unknown or entry.get("includeSelectors") or entry.get("includeTemplates"):
        raise Unsupported(f"{kfile}: labels render only `pairs` into metadata.labels")
    for res in resources:
        res.setdefault("metadata", {}).setdefault("labels", {}).update(entry.get("pairs", {}))


def split_image(image: str) -> tuple[str, str, str]:
    """``registry:5000/name:tag@sha256:...`` -> (``registry:5000/name``, tag, digest)."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest


def _apply_image(resources: list[dict], entry: dict, kfile: Path) -> None:
    unknown = sorted(set(entry) - {"name", "newName", "newTag", "digest"})
    if unknown:
        raise Unsupported(f"{kfile}: images fields {', '.join(unknown)}")

    def rewrite(image: str) -> str:
        name, tag, digest = split_image(image)
        if name != entry["name"]:
            return image
        name = entry.get("newName", name)
        if "digest" in entry:
            return f"{name}@{entry['digest']}"
        tag = str(entry.get("newTag", tag))
        out = f"{name}:{tag}" if tag else name
        return f"{out}@{digest}" if digest and "newTag" not in entry else out

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    for c in value:
                        if isinstance(c, dict) and isinstance(c.get("image"), str):
                            c["image"] = rewrite(c["image"])
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for res in resources:
        walk(res)
