"""The head fault-tolerance overlay (k8s/overlays/gpu-prod-gcs-ft) is gpu-prod plus GCS
fault tolerance with an external Redis, in both clusters, validated against the KubeRay
CRDs (the overlay also runs through every parametrized test of test_manifests.py)."""

from __future__ import annotations

import copy
import re

import pytest

FT = "overlays/gpu-prod-gcs-ft"


def _clusters(objs: list[dict]) -> dict[str, dict]:
    out = {}
    for obj in objs:
        if obj["kind"] == "RayCluster":
            out["RayCluster"] = obj["spec"]
        elif obj["kind"] == "RayJob":
            out["RayJob"] = obj["spec"]["rayClusterSpec"]
    return out


def test_both_clusters_keep_gcs_state_in_external_redis(rendered, validator):
    for obj in rendered[FT]:
        validator.validate(obj)
    for owner, spec in _clusters(rendered[FT]).items():
        ft = spec["gcsFaultToleranceOptions"]
        assert re.fullmatch(r"[\w.-]+:\d+", ft["redisAddress"]), owner
        # the password comes from a Secret created with kubectl, never from the manifest
        assert "value" not in ft["redisPassword"], owner
        ref = ft["redisPassword"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "annealscale-redis", "key": "password"}, owner
        assert "backend" not in ft  # immutable once set (a CEL rule): left at its default


def test_the_overlay_is_gpu_prod_plus_fault_tolerance_only(rendered):
    prod = {(o["kind"], o["metadata"]["name"]): o for o in rendered["overlays/gpu-prod"]}
    ft = {(o["kind"], o["metadata"]["name"]): o for o in rendered[FT]}
    assert set(prod) == set(ft)
    for key, obj in ft.items():
        obj = copy.deepcopy(obj)
        labels = obj["metadata"]["labels"]
        assert labels.pop("annealscale.io/head-fault-tolerance") == "redis", key
        spec = obj.get("spec", {})
        spec.pop("gcsFaultToleranceOptions", None)
        spec.get("rayClusterSpec", {}).pop("gcsFaultToleranceOptions", None)
        assert obj == prod[key], key
    assert "gcsFaultToleranceOptions" not in prod["RayCluster", "annealscale"]["spec"]


@pytest.mark.parametrize(
    ("field", "typo"), [("redisAddress", "redisAdress"), ("redisPassword", "redisPasword")]
)
def test_a_misspelled_fault_tolerance_field_fails(rendered, validator, schemas, field, typo):
    (cluster,) = [o for o in rendered[FT] if o["kind"] == "RayCluster"]
    cluster = copy.deepcopy(cluster)
    ft = cluster["spec"]["gcsFaultToleranceOptions"]
    ft[typo] = ft.pop(field)
    with pytest.raises(schemas.ManifestError, match=re.escape(f"'{typo}' was unexpected")):
        validator.validate(cluster)


def test_setting_the_immutable_backend_is_refused_offline(rendered, validator, schemas):
    (cluster,) = [o for o in rendered[FT] if o["kind"] == "RayCluster"]
    cluster = copy.deepcopy(cluster)
    cluster["spec"]["gcsFaultToleranceOptions"]["backend"] = "redis"
    with pytest.raises(schemas.ManifestError, match="CEL rules"):
        validator.validate(cluster)
