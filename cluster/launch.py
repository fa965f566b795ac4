"""``annealscale cluster up|down CONFIG``: the Ray cluster launcher (`ray up`/`ray down`),
with the config checked offline first.

A typo in a launcher config is otherwise found by `ray up` after it has started talking to
the cloud; here the config is validated against the schema that ships with the installed
Ray and Ray's own pre-launch checks before `ray` is run, and a problem is one line naming
the key.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

from annealscale.core.errors import AnnealscaleError


def check_launcher_config(path: str | Path) -> dict:
    """Load a cluster-launcher YAML and validate it as `ray up` would, without the cloud."""
    import jsonschema
    import ray.autoscaler
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    path = Path(path)
    if not path.is_file():
        raise AnnealscaleError(f"{path}: cluster config not found")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise AnnealscaleError(f"{path}: not valid YAML") from None
    if not isinstance(config, dict):
        raise AnnealscaleError(f"{path}: expected a mapping of launcher settings")
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        where = ".".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        raise AnnealscaleError(f"{path}: {where}: {errors[0].message.splitlines()[0]}")
    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except (ValueError, jsonschema.ValidationError) as err:
        raise AnnealscaleError(f"{path}: {str(err).splitlines()[0]}") from None
    return config


def launcher_command(action: str, config: str | Path, *, yes: bool = False) -> list[str]:
    """The `ray up`/`ray down` command line for ``config``."""
    if action not in ("up", "down"):
        raise AnnealscaleError(f"cluster {action}: expected up or down")
    return [_ray_executable(), action, str(config)] + (["--yes"] if yes else [])


def _ray_executable() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.is_file() else shutil.which("ray")
    if not found:
        raise AnnealscaleError("ray CLI not found; install it with pip install 'ray[default]'")
    return found


def add_cluster_commands(sub) -> None:
    """Register ``cluster up|down`` on the CLI's subparsers."""
    cluster = sub.add_parser("cluster", help="start or stop an autoscaled cloud Ray cluster")
    actions = cluster.add_subparsers(required=True, metavar="ACTION")
    for action, text in (
        ("up", "start or update the cluster (`ray up`)"),
        ("down", "terminate every node (`ray down`)"),
    ):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("config", help="launcher config, e.g. cluster/launcher/aws.yaml")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.set_defaults(func=_cmd_launcher, action=action)


def _cmd_launcher(args) -> int:
    check_launcher_config(args.config)
    command = launcher_command(args.action, args.config, yes=args.yes)
    print("running: " + " ".join(command), flush=True)
    return subprocess.run(command, check=False).returncode
