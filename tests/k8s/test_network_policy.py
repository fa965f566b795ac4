"""The NetworkPolicy in k8s/ admits only what it must (evaluated here as Kubernetes does).

Kubernetes semantics: a pod selected by some policy admits a connection when any rule of
any policy selecting it admits it; a rule admits a peer matched by any of its ``from``
entries (a ``podSelector`` alone means the policy's namespace; with a
``namespaceSelector`` any namespace that matches) on any of its ``ports`` (none listed:
every port). No cluster is needed: the test evaluates the rendered policies against the
pod labels of the rendered pod templates.
"""

from __future__ import annotations

import copy

import pytest

NAMESPACE = "annealscale"
GCS, CLIENT, DASHBOARD, METRICS = 6379, 10001, 8265, 8080
PORTS = (GCS, CLIENT, DASHBOARD, METRICS)


def _selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict, ns_labels: dict, pod_labels: dict) -> bool:
    if "ipBlock" in peer:
        return False  # the peers below are pods
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], ns_labels):
            return False
    elif ns_labels["kubernetes.io/metadata.name"] != NAMESPACE:
        return False
    return _selects(peer.get("podSelector", {}), pod_labels)


def admitted(policies: list[dict], target: dict, port: int, ns: str, pod: dict, ns_extra=None):
    """Whether a pod with labels ``pod`` in namespace ``ns`` may connect to ``port`` of a
    pod labelled ``target`` in the sweep's namespace."""
    ns_labels = {"kubernetes.io/metadata.name": ns, **(ns_extra or {})}
    selecting = [p for p in policies if _selects(p["spec"]["podSelector"], target)]
    if not selecting:
        return True  # not isolated
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            if any(_peer_matches(peer, ns_labels, pod) for peer in rule.get("from", [])):
                return True
    return False


def _policies(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["kind"] == "NetworkPolicy"]


def _pod_labels(objs: list[dict]) -> dict[str, dict]:
    """Labels of every pod template: head, each worker group, the submitter."""
    out = {}
    for obj in objs:
        if obj["kind"] == "RayCluster":
            specs = [("RayCluster", obj["spec"])]
        elif obj["kind"] == "RayJob":
            specs = [("RayJob", obj["spec"]["rayClusterSpec"])]
            out["RayJob submitter"] = obj["spec"]["submitterPodTemplate"]["metadata"]["labels"]
        else:
            continue
        for owner, spec in specs:
            out[f"{owner} head"] = spec["headGroupSpec"]["template"]["metadata"]["labels"]
            for group in spec["workerGroupSpecs"]:
                out[f"{owner} {group['groupName']}"] = group["template"]["metadata"]["labels"]
    return out


KUSTOMIZATIONS = ["base", "overlays/dev-cpu", "overlays/gpu-prod"]
OUTSIDER = {"app": "something-else"}
OPERATOR = {"app.kubernetes.io/name": "kuberay-operator"}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_only_rays_own_pods_reach_gcs_and_the_client_port(kustomization, rendered):
    objs = rendered[kustomization]
    policies, pods = _policies(objs), _pod_labels(objs)
    heads = [labels for name, labels in pods.items() if name.endswith(" head")]
    ray_pods = [labels for name, labels in pods.items() if not name.endswith("submitter")]
    assert len(heads) == 2 and len(ray_pods) >= 4
    for head in heads:
        for port in (GCS, CLIENT):
            for peer in ray_pods:
                assert admitted(policies, head, port, NAMESPACE, peer)
            assert not admitted(policies, head, port, NAMESPACE, pods["RayJob submitter"])
            assert not admitted(policies, head, port, NAMESPACE, OUTSIDER)
            assert not admitted(policies, head, port, "kuberay-system", OPERATOR)
            assert not admitted(policies, head, port, "monitoring", OUTSIDER)
    # workers too: nothing but Ray's own pods reaches them, except metrics scrapes
    workers = [labels for name, labels in pods.items() if name.split()[1] not in ("head",)]
    for worker in [w for w in workers if w.get("annealscale.io/role") == "worker"]:
        assert admitted(policies, worker, 12345, NAMESPACE, heads[0])
        assert not admitted(policies, worker, 12345, NAMESPACE, OUTSIDER)
        assert not admitted(policies, worker, DASHBOARD, NAMESPACE, pods["RayJob submitter"])


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_dashboard_only_to_the_submitter_and_the_operator(kustomization, rendered):
    objs = rendered[kustomization]
    policies, pods = _policies(objs), _pod_labels(objs)
    head = pods["RayCluster head"]
    submitter = pods["RayJob submitter"]
    assert admitted(policies, head, DASHBOARD, NAMESPACE, submitter)
    assert admitted(policies, head, DASHBOARD, "kuberay-system", OPERATOR)
    labelled = {"annealscale.io/submitter": "true"}
    assert admitted(policies, head, DASHBOARD, "ci", OUTSIDER, ns_extra=labelled)
    assert not admitted(policies, head, DASHBOARD, "ci", OUTSIDER)
    assert not admitted(policies, head, DASHBOARD, NAMESPACE, OUTSIDER)
    assert not admitted(policies, head, DASHBOARD, "monitoring", OUTSIDER)
    # the submitter reaches nothing else, and nothing reaches it
    for port in (GCS, CLIENT, METRICS):
        assert not admitted(policies, head, port, NAMESPACE, submitter)
    assert not admitted(policies, submitter, 1234, NAMESPACE, head)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_metrics_only_to_the_monitoring_namespace(kustomization, rendered):
    objs = rendered[kustomization]
    policies, pods = _policies(objs), _pod_labels(objs)
    for name, labels in pods.items():
        if name.endswith("submitter"):
            continue
        assert admitted(policies, labels, METRICS, "monitoring", {"app": "prometheus"}), name
        assert not admitted(policies, labels, METRICS, "default", {"app": "prometheus"}), name
        assert not admitted(policies, labels, METRICS, NAMESPACE, OUTSIDER), name
        for port in (GCS, CLIENT, DASHBOARD):
            assert not admitted(policies, labels, port, "monitoring", {"app": "prometheus"})


def test_every_ray_pod_is_selected_by_a_policy(rendered):
    # A pod template without the role label would be open to every pod in the cluster.
    for kustomization in KUSTOMIZATIONS:
        objs = rendered[kustomization]
        policies = _policies(objs)
        for name, labels in _pod_labels(objs).items():
            assert any(_selects(p["spec"]["podSelector"], labels) for p in policies), name
            assert all(p["spec"]["policyTypes"] == ["Ingress"] for p in policies)


def test_the_evaluator_reads_selectors_as_kubernetes_does(rendered):
    (policy,) = [p for p in _policies(rendered["base"]) if p["metadata"]["name"].endswith("head")]
    policy = copy.deepcopy(policy)
    head = {"app.kubernetes.io/name": "annealscale", "annealscale.io/role": "head"}
    # dropping the port list of the dashboard rule opens every port to the submitter
    del policy["spec"]["ingress"][1]["ports"]
    submitter = {"app.kubernetes.io/name": "annealscale", "annealscale.io/role": "submitter"}
    assert admitted([policy], head, GCS, NAMESPACE, submitter)
    # an empty namespaceSelector with no podSelector admits every pod everywhere
    policy["spec"]["ingress"][2]["from"] = [{"namespaceSelector": {}}]
    assert admitted([policy], head, METRICS, "anywhere", OUTSIDER)
    assert admitted([], head, GCS, "anywhere", OUTSIDER)  # no policy: not isolated
