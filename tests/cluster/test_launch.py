"""`annealscale cluster up|down CONFIG`.

`ray up` talks to a cloud API that cannot exist in a test, so the launcher process itself
is mocked (``subprocess.run`` is replaced and records the command): these tests check the
exact command line that would run, and that a bad config stops before `ray` is called.
The configs themselves are validated in test_launcher_configs.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from annealscale.cluster.cli import main
from annealscale.cluster.launch import check_launcher_config, launcher_command

LAUNCHER = Path(__file__).resolve().parents[2] / "cluster" / "launcher"


@pytest.fixture
def recorded(monkeypatch):
    calls = []

    def fake_run(command, check=False):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr("annealscale.cluster.launch.subprocess.run", fake_run)
    return calls


@pytest.mark.parametrize("action", ["up", "down"])
@pytest.mark.parametrize("config", ["aws.yaml", "gcp.yaml"])
def test_runs_ray_up_or_down_on_the_config(recorded, action, config, capsys):
    path = str(LAUNCHER / config)
    assert main(["cluster", action, path, "--yes"]) == 0
    (command,) = recorded
    assert Path(command[0]).name == "ray"
    assert command[1:] == [action, path, "--yes"]
    assert capsys.readouterr().out == "running: " + " ".join(command) + "\n"


def test_without_yes_ray_asks_for_confirmation(recorded):
    assert launcher_command("up", "c.yaml")[1:] == ["up", "c.yaml"]


def test_launcher_exit_code_is_passed_on(monkeypatch):
    monkeypatch.setattr(
        "annealscale.cluster.launch.subprocess.run",
        lambda command, check=False: subprocess.CompletedProcess(command, 3),
    )
    assert main(["cluster", "down", str(LAUNCHER / "aws.yaml"), "--yes"]) == 3


def test_misspelled_key_stops_before_ray_is_called(recorded, tmp_path, capsys):
    config = yaml.safe_load((LAUNCHER / "aws.yaml").read_text())
    config["idle_timeout_minute"] = config.pop("idle_timeout_minutes")
    path = tmp_path / "aws.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["cluster", "up", str(path), "--yes"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "idle_timeout_minute" in err and str(path) in err
    assert recorded == []


def test_missing_config_is_named(recorded, tmp_path, capsys):
    assert main(["cluster", "up", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: cluster config not found" in capsys.readouterr().err
    assert recorded == []


def test_shipped_configs_pass_the_check():
    for name in ("aws.yaml", "gcp.yaml"):
        assert check_launcher_config(LAUNCHER / name)["cluster_name"]
