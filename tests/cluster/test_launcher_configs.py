"""The Ray cluster-launcher configs in cluster/launcher/ are valid before `ray up` spends money.

Each config validates offline against the JSON schema that ships with the installed Ray
(``ray/autoscaler/ray-schema.json``, which rejects unknown top-level, node-type, auth and
docker keys), and passes the checks `ray up` runs before it contacts the cloud (Ray's
``prepare_config`` + ``validate_config``: defaults merged, head type present, min/max
workers consistent). Cloud-specific ``node_config`` and ``provider`` bodies are free-form
in that schema; the tests below pin the parts that matter here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "cluster" / "launcher"
CONFIGS = ["aws.yaml", "gcp.yaml"]
RAY_VERSION = "2.60.0"


@pytest.fixture(scope="module")
def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def _load(name: str) -> dict:
    return yaml.safe_load((LAUNCHER / name).read_text())


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_against_rays_schema(name, ray_schema):
    validator = jsonschema.validators.validator_for(ray_schema)(ray_schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(_load(name))]
    assert errors == []


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_the_checks_ray_up_runs_before_launching(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load(name)
    validate_config(config)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0


MISSPELLINGS = [
    ((), "idle_timeout_minutes", "idle_timeout_minute"),
    ((), "head_node_type", "head_node_typ"),
    ((), "setup_commands", "setup_command"),
    (("available_node_types", "gpu"), "min_workers", "min_worker"),
    (("available_node_types", "gpu"), "max_workers", "maxworkers"),
    (("available_node_types", "gpu"), "node_config", "nodeconfig"),
    (("docker",), "worker_image", "worker_images"),
    (("auth",), "ssh_user", "ssh_usr"),
]


def _gpu_type(config: dict) -> str:
    return next(k for k, v in config["available_node_types"].items() if v["resources"].get("GPU"))


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize(("where", "key", "typo"), MISSPELLINGS)
def test_misspelled_key_fails_validation(name, where, key, typo, ray_schema):
    config = _load(name)
    node = config
    for part in where:
        node = node[_gpu_type(config) if part == "gpu" else part]
    node[typo] = node.pop(key)
    with pytest.raises(jsonschema.ValidationError) as caught:
        jsonschema.validate(config, ray_schema)
    assert typo in caught.value.message or key in caught.value.message


@pytest.mark.parametrize("name", CONFIGS)
def test_cpu_head_and_autoscaled_gpu_workers(name):
    config = _load(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # the head drives; trials go to GPU nodes
    gpu_types = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert len(gpu_types) >= 2
    for t in gpu_types:
        assert t["min_workers"] == 0 < t["max_workers"] <= config["max_workers"]
        assert t["resources"]["CPU"] >= 4
    assert 0 < config["idle_timeout_minutes"] <= 30
    assert config["upscaling_speed"] > 0


@pytest.mark.parametrize("name", CONFIGS)
def test_nodes_run_ray_images_and_install_annealscale(name):
    config = _load(name)
    docker = config["docker"]
    assert docker["head_image"] == f"rayproject/ray:{RAY_VERSION}-py311-cpu"
    assert docker["worker_image"] == docker["image"] == f"rayproject/ray:{RAY_VERSION}-py311-gpu"
    assert config["file_mounts"]["~/annealscale"] == "."  # `ray up` from the repo root
    assert ".gitignore" in config["rsync_filter"]  # no .venv or runs/ uploaded
    install = f'pip install -q -e ~/annealscale "ray[tune,train,data]=={RAY_VERSION}"'
    assert install in config["head_setup_commands"]
    assert install in config["worker_setup_commands"]
    assert any("annealscale validate" in c for c in config["head_setup_commands"])
    assert any("g++" in c for c in config["setup_commands"])  # DeepSpeed's C++ op
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start


def test_aws_specifics():
    config = _load("aws.yaml")
    assert config["provider"]["cache_stopped_nodes"] is False  # idle GPU nodes are deleted
    for t in config["available_node_types"].values():
        assert t["node_config"]["ImageId"].startswith("resolve:ssm:/aws/service/deeplearning/")
        assert t["node_config"]["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] >= 100
    assert "boto3" in " ".join(config["head_setup_commands"])


def test_gcp_specifics():
    config = _load("gcp.yaml")
    assert config["provider"]["project_id"]
    for t in config["available_node_types"].values():
        (disk,) = t["node_config"]["disks"]
        assert (
            disk["boot"]
            and "deeplearning-platform-release" in (disk["initializeParams"]["sourceImage"])
        )
        if t["resources"].get("GPU"):
            # GPU VMs cannot live-migrate; the driver comes from the DLVM image.
            assert t["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"
            assert {"key": "install-nvidia-driver", "value": "True"} in (
                t["node_config"]["metadata"]["items"]
            )


@pytest.mark.parametrize("name", CONFIGS)
def test_token_auth_on_and_no_dashboard_on_all_interfaces(name, ray_schema):
    text = (LAUNCHER / name).read_text()
    config = _load(name)
    jsonschema.validate(config, ray_schema)  # with auth on, still Ray's schema
    # every Ray process on every node (all run in the container) in token mode ...
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert "RAY_AUTH_MODE=disabled" not in text
    # ... with the token synced from the operator's machine, never from the repository
    token = config["file_mounts"]["~/.ray/auth_token"]
    assert token == "~/.ray/auth_token" and not (REPO / token).exists()
    assert "RAY_AUTH_TOKEN=" not in text  # no token value in the config
    # the dashboard (Jobs API) only on the head's loopback, reached through `ray dashboard`
    assert "0.0.0.0" not in text
    (start,) = [c for c in config["head_start_ray_commands"] if "ray start --head" in c]
    assert "--dashboard-host=127.0.0.1" in start
    for command in config["worker_start_ray_commands"]:
        assert "dashboard-host" not in command
