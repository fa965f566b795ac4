"""The KubeRay manifests in k8s/ are right before a GPU is booked.

Every manifest and every rendered overlay validates against the KubeRay CRD schemas with
unknown fields rejected and against the strict Kubernetes schemas (tests/k8s/schemas.py);
misspelled fields fail; the security, GPU, autoscaling and job-lifecycle properties hold;
the RayJob's cluster does not drift from the RayCluster; the mounted spec is a valid
annealscale spec that fits the cluster.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
KUSTOMIZATIONS = sorted(str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml"))
OVERLAYS = [k for k in KUSTOMIZATIONS if k.startswith("overlays/")]
RAY_VERSION = "2.60.0"
PVC_MOUNT = "/mnt/annealscale"
SPEC_MOUNT = "/etc/annealscale"
GPU = "nvidia.com/gpu"


def _kustomization(directory: Path) -> dict:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def _referenced_files() -> dict[Path, str]:
    """Every file a kustomization names, with its role: resource, patch or generator."""
    roles = {}
    for rel in KUSTOMIZATIONS:
        directory = K8S / rel
        k = _kustomization(directory)
        for entry in k.get("resources", []):
            path = (directory / entry).resolve()
            if path.is_file():
                roles[path] = "resource"
        for entry in k.get("patches", []):
            if "path" in entry:
                roles[(directory / entry["path"]).resolve()] = "patch"
        for gen in k.get("configMapGenerator", []):
            for item in gen.get("files", []):
                key, sep, rel = item.partition("=")
                roles[(directory / (rel if sep else item)).resolve()] = "generator"
    return roles


def _resource_files() -> list[str]:
    return sorted(
        str(p.relative_to(K8S)) for p, role in _referenced_files().items() if role == "resource"
    )


def _one(objs: list[dict], kind: str) -> dict:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _group(spec: dict, name: str) -> dict:
    (group,) = [g for g in spec["workerGroupSpecs"] if g["groupName"] == name]
    return group


def _ray_resources(group: dict) -> dict[str, float]:
    """The custom Ray resources a group declares (rayStartParams ``resources``, a quoted
    JSON object as KubeRay passes it to ``ray start --resources``)."""
    text = group.get("rayStartParams", {}).get("resources")
    return json.loads(json.loads(text)) if text else {}


def _mounted_spec(objs: list[dict]):
    from annealscale.tune.spec import parse_spec

    return parse_spec(yaml.safe_load(_one(objs, "ConfigMap")["data"]["spec.yaml"]))


def _cluster_specs(objs: list[dict]) -> list[tuple[str, dict]]:
    return [("RayCluster", _one(objs, "RayCluster")["spec"])] + [
        ("RayJob", _one(objs, "RayJob")["spec"]["rayClusterSpec"])
    ]


def _pod_specs(objs: list[dict]) -> list[tuple[str, dict]]:
    """Every pod spec that KubeRay turns into pods, named for messages."""
    out = []
    for owner, spec in _cluster_specs(objs):
        out.append((f"{owner} head", spec["headGroupSpec"]["template"]["spec"]))
        for group in spec.get("workerGroupSpecs", []):
            out.append((f"{owner} {group['groupName']}", group["template"]["spec"]))
    job = _one(objs, "RayJob")["spec"]
    if "submitterPodTemplate" in job:
        out.append(("RayJob submitter", job["submitterPodTemplate"]["spec"]))
    return out


# ------------------------------------------------------------------------------ layout


def test_layout_has_base_and_the_overlays():
    assert KUSTOMIZATIONS == [
        "base",
        "overlays/dev-cpu",
        "overlays/gpu-prod",
        "overlays/gpu-prod-gcs-ft",
    ]


def test_every_yaml_file_under_k8s_is_used_by_a_kustomization():
    # A manifest that no kustomization names would be neither applied nor validated.
    roles = _referenced_files()
    for path in sorted(K8S.rglob("*.y*ml")):
        if path.name == "kustomization.yaml":
            continue
        assert path.resolve() in roles, f"{path.relative_to(REPO)} is not in any kustomization"


# -------------------------------------------------------------------------- validation


@pytest.mark.parametrize("relpath", _resource_files())
def test_every_manifest_file_validates(relpath, validator):
    docs = [d for d in yaml.safe_load_all((K8S / relpath).read_text()) if d]
    assert docs, f"{relpath} holds no object"
    for doc in docs:
        validator.validate(doc)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_rendered_object_validates(kustomization, rendered, validator):
    objs = rendered[kustomization]
    assert {o["kind"] for o in objs} == {
        "ConfigMap",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "RayCluster",
        "RayJob",
        "ServiceAccount",
    }
    for obj in objs:
        validator.validate(obj)


def _set(obj: dict, path: str, old: str, new: str) -> None:
    """Rename key ``old`` to ``new`` in the mapping at dotted ``path`` (numbers index lists)."""
    node = obj
    for part in filter(None, path.split(".")):
        node = node[int(part)] if part.isdigit() else node[part]
    node[new] = node.pop(old)


MISSPELLINGS = [
    ("RayCluster", "spec.headGroupSpec", "rayStartParams", "rayStartParms"),
    ("RayCluster", "spec.workerGroupSpecs.0", "minReplicas", "minReplica"),
    ("RayCluster", "spec", "enableInTreeAutoscaling", "enableInTreeAutoScaling"),
    ("RayCluster", "spec.autoscalerOptions", "idleTimeoutSeconds", "idleTimeoutSecond"),
    ("RayCluster", "spec.workerGroupSpecs.1.template.spec", "tolerations", "toleration"),
    ("RayCluster", "spec.workerGroupSpecs.0.template.spec", "affinity", "afinity"),
    ("RayCluster", "spec.autoscalerOptions", "volumeMounts", "volumeMount"),
    ("RayJob", "spec", "shutdownAfterJobFinishes", "shutdownAfterJobFinish"),
    ("RayJob", "spec", "ttlSecondsAfterFinished", "ttlSecondAfterFinished"),
    ("RayJob", "spec.rayClusterSpec.headGroupSpec", "serviceType", "servicetype"),
    ("RayJob", "metadata", "labels", "label"),
    ("PersistentVolumeClaim", "spec", "accessModes", "accesModes"),
    ("ServiceAccount", "", "automountServiceAccountToken", "automountServiceAccountTokens"),
    ("ConfigMap", "", "data", "datas"),
    ("NetworkPolicy", "spec", "policyTypes", "policyType"),
    ("NetworkPolicy", "spec.ingress.1.from.1", "namespaceSelector", "namespaceSelecter"),
]


@pytest.mark.parametrize(("kind", "path", "field", "typo"), MISSPELLINGS)
def test_misspelled_field_fails_validation(kind, path, field, typo, rendered, validator, schemas):
    obj = copy.deepcopy(next(o for o in rendered["overlays/gpu-prod"] if o["kind"] == kind))
    validator.validate(obj)  # the correct object passes, so the failure below is the typo
    _set(obj, path, field, typo)
    with pytest.raises(schemas.ManifestError, match=re.escape(f"'{typo}' was unexpected")):
        validator.validate(obj)


def test_wrong_value_types_fail_validation(rendered, validator, schemas):
    cluster = copy.deepcopy(_one(rendered["base"], "RayCluster"))
    cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be a string
    with pytest.raises(schemas.ManifestError, match="rayStartParams.num-cpus"):
        validator.validate(cluster)
    job = copy.deepcopy(_one(rendered["base"], "RayJob"))
    job["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "tokens"
    with pytest.raises(schemas.ManifestError, match="authOptions.mode"):
        validator.validate(job)


def test_fields_behind_unevaluated_cel_rules_are_refused(rendered, validator, schemas):
    job = copy.deepcopy(_one(rendered["base"], "RayJob"))
    job["spec"]["deletionStrategy"] = {"onSuccess": {"policy": "DeleteCluster"}}
    with pytest.raises(schemas.ManifestError, match="CEL rules"):
        validator.validate(job)


def test_strict_rejects_unknown_keys_except_where_kubernetes_preserves_them(schemas):
    schema = {
        "type": "object",
        "properties": {
            "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
            "open": {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "x-kubernetes-preserve-unknown-fields": True,
            },
            "map": {"type": "object", "additionalProperties": {"type": "string"}},
            "list": {"type": "array", "items": {"properties": {"b": {"type": "integer"}}}},
        },
    }
    check = schemas.StrictCRDValidator(schemas.strict(schema))
    assert check.is_valid({"closed": {"a": "x"}, "open": {"z": 1}, "map": {"any": "x"}})
    assert check.is_valid({"list": [{"b": 1}]})
    assert not check.is_valid({"closed": {"z": "x"}})
    assert not check.is_valid({"list": [{"c": 1}]})
    assert not check.is_valid({"typo": 1})
    assert "additionalProperties" not in schema  # the input is not modified


# ---------------------------------------------------------------------------- security


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pods_run_as_non_root_without_privileges(kustomization, rendered):
    for name, pod in _pod_specs(rendered[kustomization]):
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True, name
        assert ctx["runAsUser"] > 0, name
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        assert not any("hostPath" in v for v in pod.get("volumes", [])), name
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc.get("runAsUser", ctx["runAsUser"]) > 0, (name, c["name"])
            assert sc["runAsNonRoot"] is True, (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert "add" not in sc["capabilities"] and not sc.get("privileged"), c["name"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_container_has_cpu_and_memory_requests_and_limits(kustomization, rendered):
    containers = [
        (name, c)
        for name, pod in _pod_specs(rendered[kustomization])
        for c in pod["containers"] + pod.get("initContainers", [])
    ]
    # The autoscaler sidecar that KubeRay injects into the head pod is sized here.
    for owner, spec in _cluster_specs(rendered[kustomization]):
        assert spec["enableInTreeAutoscaling"] is True
        containers.append((f"{owner} autoscaler", spec["autoscalerOptions"]))
        sc = spec["autoscalerOptions"]["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    for name, c in containers:
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)
        # Ray sizes itself from the limits; requests above them would not schedule.
        for resource in ("cpu", "memory", GPU):
            if resource in c["resources"]["requests"]:
                assert resource in c["resources"]["limits"], (name, resource)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_dashboard_and_head_service_stay_inside_the_cluster(kustomization, rendered):
    objs = rendered[kustomization]
    assert not [o for o in objs if o["kind"] in ("Service", "Ingress", "Route")]
    for owner, spec in _cluster_specs(objs):
        head = spec["headGroupSpec"]
        assert head["serviceType"] == "ClusterIP", owner
        assert head.get("enableIngress") is False, owner
        assert "headService" not in head, owner  # could set its own type
        annotations = spec.get("headServiceAnnotations", {})
        assert not any("load-balancer" in k or "external" in k for k in annotations), owner


def _walk(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}.{i}")
    yield path, node


SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL|API_KEY)", re.I)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_no_secret_values_in_manifests(kustomization, rendered):
    objs = rendered[kustomization]
    assert not [o for o in objs if o["kind"] == "Secret"], "create Secrets with kubectl"
    for obj in objs:
        for path, node in _walk(obj):
            if path.endswith(".env") and isinstance(node, list):
                for var in node:
                    if SECRET_NAME.search(var["name"]):
                        assert "value" not in var, f"{path}: {var['name']} has a literal value"
    for owner, spec in _cluster_specs(objs):
        # Token auth: KubeRay generates the token Secret; none is named or inlined here.
        assert spec["authOptions"] == {"mode": "token"}, owner


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_s3_credentials_only_by_secret_reference(kustomization, rendered):
    for name, pod in _pod_specs(rendered[kustomization]):
        for c in pod["containers"]:
            for source in c.get("envFrom", []):
                assert set(source) == {"secretRef"}, (name, source)
                assert source["secretRef"] == {"name": "annealscale-s3", "optional": True}


# ---------------------------------------------------------------------- GPUs, scaling


@pytest.mark.parametrize("kustomization", ["base", "overlays/gpu-prod"])
def test_gpu_group_requests_gpus_on_tainted_gpu_nodes(kustomization, rendered):
    for owner, spec in _cluster_specs(rendered[kustomization]):
        head = spec["headGroupSpec"]["template"]["spec"]
        assert GPU not in head["containers"][0]["resources"]["limits"], "head is CPU-only"
        assert "annealscale-cpu" in head["containers"][0]["image"], owner
        group = _group(spec, "gpu")
        pod = group["template"]["spec"]
        worker = pod["containers"][0]
        assert int(worker["resources"]["limits"][GPU]) == 8, owner  # a whole node
        assert worker["resources"]["requests"][GPU] == worker["resources"]["limits"][GPU]
        assert "annealscale-cu128" in worker["image"], owner
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, owner
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], owner


def test_dev_cpu_overlay_has_no_gpus_and_small_pods(rendered):
    objs = rendered["overlays/dev-cpu"]
    text = yaml.safe_dump(objs)
    assert GPU not in text and "tolerations" not in text and "-gpu" not in text
    for name, pod in _pod_specs(objs):
        for c in pod["containers"]:
            limits = c["resources"]["limits"]
            assert float(limits["cpu"]) <= 2, name
            assert limits["memory"].endswith("Gi") and int(limits["memory"][:-2]) <= 4, name
    assert _one(objs, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_gpu_prod_overlay_is_larger_than_base(rendered):
    def sizes(objs):
        group = _group(_one(objs, "RayCluster")["spec"], "gpu")
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        storage = int(limits["ephemeral-storage"][:-2])
        return group["maxReplicas"], int(limits["cpu"]), int(limits["memory"][:-2]), storage

    base, prod = sizes(rendered["base"]), sizes(rendered["overlays/gpu-prod"])
    assert all(p > b for p, b in zip(prod, base, strict=True)), (base, prod)
    pvc = _one(rendered["overlays/gpu-prod"], "PersistentVolumeClaim")["spec"]
    assert pvc["accessModes"] == ["ReadWriteMany"]  # pods on several nodes share it


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_autoscaling_with_idle_timeout(kustomization, rendered):
    for owner, spec in _cluster_specs(rendered[kustomization]):
        assert spec["enableInTreeAutoscaling"] is True, owner
        assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0, owner
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", owner
        for group in spec["workerGroupSpecs"]:
            assert group["maxReplicas"] > group["minReplicas"] >= 0, owner
    # The standing cluster gives every worker back when idle; the job starts with one.
    standing = _one(rendered[kustomization], "RayCluster")["spec"]["workerGroupSpecs"]
    assert all(g["minReplicas"] == 0 for g in standing)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rayjob_cluster_matches_the_raycluster(kustomization, rendered):
    # Two copies of one cluster spec; an overlay that patches only one would drift.
    objs = rendered[kustomization]
    cluster = copy.deepcopy(_one(objs, "RayCluster")["spec"])
    job = copy.deepcopy(_one(objs, "RayJob")["spec"]["rayClusterSpec"])
    for group in cluster["workerGroupSpecs"] + job["workerGroupSpecs"]:
        del group["replicas"], group["minReplicas"]
    assert job == cluster


# ------------------------------------------------------------------------ the sweep job


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rayjob_runs_the_mounted_spec_and_cleans_up(kustomization, rendered):
    objs = rendered[kustomization]
    job = _one(objs, "RayJob")["spec"]
    assert job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] > 0
    assert job["backoffLimit"] >= 1  # a retry resumes: finished cells are skipped
    assert job["activeDeadlineSeconds"] > 0
    assert job["entrypoint"].split() == [
        "annealscale",
        "sweep",
        f"{SPEC_MOUNT}/spec.yaml",
        "--out",
        f"{PVC_MOUNT}/results",
    ]
    configmap = _one(objs, "ConfigMap")
    pvc = _one(objs, "PersistentVolumeClaim")
    head = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    volumes = {v["name"]: v for v in head["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
    assert volumes[mounts[SPEC_MOUNT]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert "spec.yaml" in configmap["data"]
    for name, pod in _pod_specs(objs):
        if "submitter" in name:
            continue
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        claim = volumes[mounts[PVC_MOUNT]]["persistentVolumeClaim"]["claimName"]
        assert claim == pvc["metadata"]["name"], name
        env = {e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])}
        assert env["ANNEALSCALE_CACHE"].startswith(PVC_MOUNT + "/"), name


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_api_token_reaches_only_the_autoscaler(kustomization, rendered):
    objs = rendered[kustomization]
    account = _one(objs, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    for name, pod in _pod_specs(objs):
        # No pod automounts a token: job drivers (in ray-head) and workers hold none.
        assert pod["automountServiceAccountToken"] is False, name
        mounted = {m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        assert "kube-api-access" not in mounted, name
        if name.endswith(" head"):
            # KubeRay creates the head's account with the RBAC its autoscaler needs.
            assert "serviceAccountName" not in pod, name
            volumes = {v["name"]: v for v in pod["volumes"]}
            sources = volumes["kube-api-access"]["projected"]["sources"]
            assert {"path": "token", "expirationSeconds": 3607} in [
                src.get("serviceAccountToken") for src in sources
            ]
        else:
            assert pod["serviceAccountName"] == account["metadata"]["name"], name
            assert not any("projected" in v for v in pod.get("volumes", [])), name
    for owner, spec in _cluster_specs(objs):
        # ... and the autoscaler sidecar mounts it where the Kubernetes client looks.
        (mount,) = spec["autoscalerOptions"]["volumeMounts"]
        assert mount == {
            "name": "kube-api-access",
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            "readOnly": True,
        }, owner


def _worker_pods(objs: list[dict]) -> list[tuple[str, dict]]:
    return [(n, p) for n, p in _pod_specs(objs) if not n.endswith((" head", " submitter"))]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_hugging_face_cache_is_on_the_shared_volume(kustomization, rendered):
    for name, pod in _pod_specs(rendered[kustomization]):
        if name.endswith(" submitter"):
            continue
        env = {e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])}
        assert env["HF_HOME"].startswith(PVC_MOUNT + "/"), name


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_mounted_spec_is_a_valid_sweep_that_fits_the_cluster(kustomization, rendered):
    objs = rendered[kustomization]
    spec = _mounted_spec(objs)
    assert spec.storage_path.startswith(PVC_MOUNT + "/")
    res = spec.resources
    assert res.max_concurrent_trials is not None  # the autoscaled cluster starts small
    cluster = _one(objs, "RayCluster")["spec"]
    groups = cluster["workerGroupSpecs"]
    train_groups = [g for g in groups if g["groupName"] != "drivers"]
    (group,) = train_groups
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    gpus_per_pod = int(limits.get(GPU, 0))
    assert (res.gpus_per_worker > 0) == (gpus_per_pod > 0)
    if gpus_per_pod:
        # The spec knows the node size, so it packs a cell onto one node (STRICT_PACK).
        assert res.gpus_per_node == gpus_per_pod
        nodes = -(-res.num_workers * res.gpus_per_worker // gpus_per_pod)
        cells_per_pod = max(1, gpus_per_pod // (res.num_workers * res.gpus_per_worker))
        workers_per_pod = min(res.num_workers, gpus_per_pod // res.gpus_per_worker)
        # A cell's workers on one pod leave a CPU for Ray Data's reads.
        assert workers_per_pod * cells_per_pod * res.cpus_per_worker < int(limits["cpu"])
        capacity = group["maxReplicas"] * cells_per_pod // nodes
    else:
        # One trial = a 1-CPU Tune driver + num_workers Train workers on a CPU pod.
        per_trial = res.num_workers * res.cpus_per_worker
        capacity = (int(limits["cpu"]) - 1) // per_trial * group["maxReplicas"]
    assert 1 <= res.max_concurrent_trials <= capacity
    # Drivers ask only for resources that some group declares, or they would never start.
    declared = {name for g in groups for name in _ray_resources(g)}
    assert set(res.driver_resources) <= declared


@pytest.mark.parametrize("kustomization", ["base", "overlays/gpu-prod"])
def test_every_spec_cell_fits_a_gpu_pod_or_whole_pods(kustomization, rendered):
    objs = rendered[kustomization]
    res = _mounted_spec(objs).resources
    limits = _group(_one(objs, "RayCluster")["spec"], "gpu")["template"]["spec"]["containers"][0][
        "resources"
    ]["limits"]
    pod_gpus = int(limits[GPU])
    cell = res.num_workers * res.gpus_per_worker
    assert cell <= pod_gpus or cell % pod_gpus == 0, (cell, pod_gpus)


def test_a_spec_cell_larger_than_a_pod_is_rejected_with_one_line(rendered):
    from annealscale.core.errors import AnnealscaleError
    from annealscale.tune.spec import parse_spec

    data = yaml.safe_load(_one(rendered["overlays/gpu-prod"], "ConfigMap")["data"]["spec.yaml"])
    data["resources"]["num_workers"] = 12  # 12 GPUs: more than a node, not two nodes
    data["train"]["micro_batch_size"] = 1
    data["train"]["batch_size"] = 48
    with pytest.raises(AnnealscaleError) as caught:
        parse_spec(data)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("resources.num_workers:") and "gpus_per_node" in message
    data["resources"]["num_workers"] = 16  # two whole nodes: accepted
    assert parse_spec(data).resources.num_workers == 16


@pytest.mark.parametrize("kustomization", ["base", "overlays/gpu-prod"])
def test_drivers_require_the_on_demand_resource(kustomization, rendered):
    objs = rendered[kustomization]
    res = _mounted_spec(objs).resources
    assert dict(res.driver_resources) == {"on_demand": 1.0}
    for owner, spec in _cluster_specs(objs):
        drivers, gpu = _group(spec, "drivers"), _group(spec, "gpu")
        # Only the driver group offers it, so no driver can land on a (spot) GPU node.
        assert _ray_resources(drivers)["on_demand"] >= res.max_concurrent_trials, owner
        assert _ray_resources(gpu) == {}, owner
        pod = drivers["template"]["spec"]
        assert GPU not in pod["containers"][0]["resources"]["limits"], owner
        (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        keep_off = {e["key"] for e in term["matchExpressions"] if e["operator"] == "NotIn"}
        assert {"eks.amazonaws.com/capacityType", "cloud.google.com/gke-spot"} <= keep_off
        assert "tolerations" not in pod, owner  # tolerates no spot taint


def test_gpu_prod_cells_checkpoint_periodically(rendered):
    spec = _mounted_spec(rendered["overlays/gpu-prod"])
    every = spec.checkpoint.every_steps or spec.checkpoint.every_tokens
    assert every, "a preempted cell would restart from step 0"
    steps = min(spec.grid.train_tokens) // spec.train.tokens_per_step
    assert (spec.checkpoint.every_steps or 0) < steps  # even the shortest cell saves one
    assert spec.retries.preemption_failures == -1  # preemptions never fail a cell


# -------------------------------------------------------------------- images, versions


def _dockerfile_args() -> dict[str, str]:
    text = (K8S / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))


def test_ray_version_is_the_same_everywhere(rendered):
    dockerfile = (K8S / "Dockerfile").read_text()
    assert _dockerfile_args()["RAY_VERSION"] == RAY_VERSION
    assert "FROM rayproject/ray:${RAY_VERSION}-py311-${FLAVOR}" in dockerfile
    assert '"ray[tune,train,data]==${RAY_VERSION}"' in dockerfile
    for kustomization, objs in rendered.items():
        for owner, spec in _cluster_specs(objs):
            assert spec["rayVersion"] == RAY_VERSION, (kustomization, owner)


def test_torch_is_pinned_to_the_build_of_the_base_images_cuda():
    from importlib.metadata import version

    dockerfile = (K8S / "Dockerfile").read_text()
    args = _dockerfile_args()
    # the torch the tests run with, without its local build suffix
    assert args["TORCH_VERSION"] == version("torch").split("+")[0]
    assert args["FLAVOR"] == "cpu"
    pin = '"torch==${TORCH_VERSION}+${FLAVOR}"'
    # every pip install that could bring torch holds it at the pinned build
    installs = re.findall(r"pip install[^&]*", dockerfile)
    assert len(installs) == 2 and all(pin in i for i in installs)
    assert '--index-url "https://download.pytorch.org/whl/${FLAVOR}"' in installs[0]
    # and the build checks what it got: that version, built for that CUDA
    assert "torch.version.cuda" in dockerfile and "sys.exit(" in dockerfile
    assert "torch>=" not in dockerfile and "pip install --no-cache-dir torch " not in dockerfile


IMAGES = {"annealscale-cpu", "annealscale-cu128"}
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_images_are_the_ones_k8s_dockerfile_builds(kustomization, rendered, kustomize):
    for name, pod in _pod_specs(rendered[kustomization]):
        for c in pod["containers"]:
            image, tag, digest = kustomize.split_image(c["image"])
            assert image.rpartition("/")[2] in IMAGES, (name, c["image"])
            assert c["imagePullPolicy"] == "IfNotPresent"
            if kustomization.startswith("overlays/gpu-prod"):
                # production pods name one build each: a digest, never a movable tag
                assert not tag and DIGEST.match(digest), (name, c["image"])
                assert image.startswith("registry.example.com/"), (name, c["image"])
            else:
                assert tag == "0.1.0" and not digest, (name, c["image"])


def test_gpu_prod_pins_each_image_by_its_own_digest():
    k = _kustomization(K8S / "overlays/gpu-prod")
    entries = {e["name"]: e for e in k["images"]}
    assert set(entries) == IMAGES  # one entry per image: a digest names one build
    for entry in entries.values():
        assert DIGEST.match(entry["digest"]) and "newTag" not in entry


# ------------------------------------------------------------------------------ storage

EIGHT_B = 8_030_261_248  # Llama 3 8B: the full anneal gpu-prod is sized for
UNITS = {"Gi": 2**30, "Ti": 2**40, "G": 10**9, "T": 10**12}


def _bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity).groups()
    return int(number) * UNITS.get(unit, 1)


def test_gpu_prod_storage_is_sized_from_the_checkpoint_estimate(rendered):
    from annealscale.tune.storage_plan import checkpoint_bytes, sweep_peak

    objs = rendered["overlays/gpu-prod"]
    spec = _mounted_spec(objs)
    for owner, cluster in _cluster_specs(objs):
        limits = _group(cluster, "gpu")["template"]["spec"]["containers"][0]["resources"]
        local = _bytes(limits["requests"]["ephemeral-storage"])
        assert limits["limits"]["ephemeral-storage"] == limits["requests"]["ephemeral-storage"]
        # the node's ranks write the cell's whole checkpoint locally before Ray Train copies
        # it to storage: room for two of them (one still being copied)
        ranks_on_node = min(spec.resources.num_workers, spec.resources.gpus_per_node)
        share = ranks_on_node / spec.resources.num_workers
        per_node = share * checkpoint_bytes(EIGHT_B, spec.train.zero_stage, True)
        assert local >= 2 * per_node, (owner, local, per_node)
    # and the shared volume holds the sweep's peak under its checkpoint and retention policy
    pvc = _one(objs, "PersistentVolumeClaim")["spec"]["resources"]["requests"]["storage"]
    peak = sweep_peak(spec, EIGHT_B)
    assert peak.finished == 0 and spec.retention.delete_trunks  # nothing piles up
    assert _bytes(pvc) >= peak.peak_bytes, (pvc, peak.line())
