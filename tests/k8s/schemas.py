"""Offline schema validation for the manifests in ``k8s/``.

Custom resources (``ray.io/v1`` RayCluster, RayJob) are checked against the
``openAPIV3Schema`` of the KubeRay CRDs vendored in ``tests/k8s/crds/`` made strict:
every object schema that lists ``properties`` rejects other keys, unless it sets
``x-kubernetes-preserve-unknown-fields`` (the API server prunes or rejects unknown fields;
a typo such as ``rayStartParms`` would otherwise be dropped silently). Their
``metadata`` and every embedded pod template are also checked against the strict
Kubernetes schemas, and so is every core object (ConfigMap, PersistentVolumeClaim,
ServiceAccount, ...), using the JSON schemas that the ``kubernetes-validate`` package
ships for each Kubernetes release.

CEL rules (``x-kubernetes-validations``) cannot be evaluated offline: a manifest that sets
a field guarded by one fails here with that message, so nobody relies on an unchecked rule.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The Kubernetes release whose core schemas the manifests must satisfy (a supported
# release; kubernetes-validate 1.37 ships strict schemas for 1.25 to 1.37).
KUBERNETES_VERSION = "1.33"
CRD_FILES = ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml")
PRESERVE = "x-kubernetes-preserve-unknown-fields"


class ManifestError(ValueError):
    """A manifest does not validate; the message names the object and the field path."""


def strict(schema: Any) -> Any:
    """Return a copy of an OpenAPI v3 schema that rejects unknown object keys.

    Every object schema with ``properties`` and without ``additionalProperties`` or
    ``x-kubernetes-preserve-unknown-fields: true`` gets ``additionalProperties: false``;
    sub-schemas (properties, items, additionalProperties, allOf/anyOf/oneOf/not) are
    handled recursively.
    """
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        if "properties" in node and not node.get(PRESERVE) and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for sub in node.get(key, {}).values():
                visit(sub)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                visit(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            visit(node.get(key, []))

    visit(schema)
    return schema


def _cel_unchecked(validator, rules, instance, schema):
    messages = "; ".join(rule.get("message", rule.get("rule", "")) for rule in rules)
    yield jsonschema.ValidationError(
        f"sets a field guarded by CEL rules that are not evaluated offline ({messages}); "
        "add a Python check for it to tests/k8s before using it"
    )


def _list_type(validator, list_type, instance, schema):
    # Kubernetes list semantics: `map` lists are keyed (e.g. containers by name).
    if not isinstance(instance, list):
        return
    if list_type == "set" and len({repr(i) for i in instance}) != len(instance):
        yield jsonschema.ValidationError("x-kubernetes-list-type set has duplicate items")
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = [tuple(item.get(k) for k in keys) for item in instance if isinstance(item, dict)]
        if len(set(seen)) != len(seen):
            yield jsonschema.ValidationError(f"duplicate list-map keys {keys} in {seen}")


StrictCRDValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    {"x-kubernetes-validations": _cel_unchecked, "x-kubernetes-list-type": _list_type},
)


def load_crd_schemas(directory: Path) -> dict[tuple[str, str], Any]:
    """``{(apiVersion, kind): strict openAPIV3Schema}`` for every served CRD version."""
    out = {}
    for name in CRD_FILES:
        crd = yaml.load((directory / name).read_text(), Loader=_Loader)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = strict(version["schema"]["openAPIV3Schema"])
                out[(f"{group}/{version['name']}", kind)] = StrictCRDValidator(schema)
    return out


def _format(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "<root>"
    return f"{path}: {error.message}"


class CoreSchemas:
    """The strict JSON schemas of one Kubernetes release, as shipped by kubernetes-validate.

    Loaded once (``kubernetes_validate.validate`` re-reads 1.4 MB of definitions per call).
    """

    def __init__(self, version: str = KUBERNETES_VERSION):
        root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
        self.dir = root / f"v{version}.0-local-strict"
        if not self.dir.is_dir():
            raise ManifestError(
                f"kubernetes-validate has no strict schemas for Kubernetes {version}; "
                "update KUBERNETES_VERSION in tests/k8s/schemas.py"
            )
        definitions = json.loads((self.dir / "_definitions.json").read_text())
        self.definitions_id = definitions["$id"]
        self.registry = referencing.Registry().with_resource(
            self.definitions_id, referencing.Resource.from_contents(definitions)
        )
        self._validators: dict[str, jsonschema.protocols.Validator] = {}

    def _validator(self, schema_file: str) -> jsonschema.protocols.Validator:
        if schema_file not in self._validators:
            path = self.dir / schema_file
            if not path.is_file():
                raise ManifestError(f"no Kubernetes {KUBERNETES_VERSION} schema {schema_file}")
            schema = json.loads(path.read_text())
            self._validators[schema_file] = jsonschema.Draft202012Validator(
                schema, registry=self.registry
            )
        return self._validators[schema_file]

    def _definition(self, name: str) -> jsonschema.protocols.Validator:
        if name not in self._validators:
            ref = {"$ref": f"{self.definitions_id}#/$defs/{name}"}
            self._validators[name] = jsonschema.Draft202012Validator(ref, registry=self.registry)
        return self._validators[name]

    def validate(self, obj: dict, where: str) -> None:
        """Check a core object (ConfigMap, PersistentVolumeClaim, ...) by its apiVersion/kind."""
        # kubernetes-validate's file naming: rbac.authorization.k8s.io/v1 -> rbac-v1.
        api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", obj.get("apiVersion", ""))
        _raise_first(self._validator(f"{obj.get('kind', '').lower()}-{api}.json"), obj, where)

    def validate_definition(self, name: str, value: Any, where: str) -> None:
        """Check a value against one definition, e.g. ``io.k8s.api.core.v1.PodTemplateSpec``."""
        _raise_first(self._definition(name), value, where)


def _raise_first(validator: jsonschema.protocols.Validator, value: Any, where: str) -> None:
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        raise ManifestError(f"{where}: " + "; ".join(_format(e) for e in errors))


def pod_templates(obj: dict) -> Iterator[tuple[str, dict]]:
    """Every pod template of a KubeRay resource, as (JSON path, template)."""
    spec = obj.get("spec", {})
    clusters = []
    if obj["kind"] == "RayCluster":
        clusters.append(("spec", spec))
    elif obj["kind"] == "RayJob":
        if "rayClusterSpec" in spec:
            clusters.append(("spec.rayClusterSpec", spec["rayClusterSpec"]))
        if "submitterPodTemplate" in spec:
            yield "spec.submitterPodTemplate", spec["submitterPodTemplate"]
    for prefix, cluster in clusters:
        if "template" in cluster.get("headGroupSpec", {}):
            yield f"{prefix}.headGroupSpec.template", cluster["headGroupSpec"]["template"]
        for i, group in enumerate(cluster.get("workerGroupSpecs", [])):
            if "template" in group:
                yield f"{prefix}.workerGroupSpecs.{i}.template", group["template"]


class Validator:
    """Validates any object of ``k8s/``: KubeRay resources and core objects."""

    def __init__(self, crd_dir: Path | None):
        self.crds = load_crd_schemas(crd_dir) if crd_dir is not None else None
        self.core = CoreSchemas()

    def validate(self, obj: dict) -> None:
        where = f"{obj.get('kind', '?')}/{obj.get('metadata', {}).get('name', '?')}"
        if obj.get("apiVersion", "").rpartition("/")[0].endswith("ray.io"):
            self.validate_custom(obj, where)
        else:
            self.core.validate(obj, where)

    def validate_custom(self, obj: dict, where: str) -> None:
        if self.crds is None:
            raise ManifestError(f"{where}: no KubeRay CRD schemas loaded")
        validator = self.crds.get((obj["apiVersion"], obj["kind"]))
        if validator is None:
            raise ManifestError(f"{where}: no CRD schema for {obj['apiVersion']} {obj['kind']}")
        _raise_first(validator, obj, where)
        # The CRD leaves top-level metadata open (the API server checks it as ObjectMeta),
        # and its pod template schema is as old as the KubeRay build: check both against
        # the Kubernetes release too.
        self.core.validate_definition(
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            obj.get("metadata", {}),
            f"{where} metadata",
        )
        for path, template in pod_templates(obj):
            self.core.validate_definition(
                "io.k8s.api.core.v1.PodTemplateSpec", template, f"{where} {path}"
            )
