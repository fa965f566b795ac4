"""`annealscale submit` against a real Ray head with token authentication on.

A head is started on 127.0.0.1 with ``RAY_AUTH_MODE=token`` (`ray start --head --block` in
its own process group, on free ports and its own temp dir). A small sweep on the tiny
demo assets (one source, two cells: the quick demo's shape on the `tiny_assets` model, so
the test takes about a minute instead of the ~5 minutes of ``demo --quick`` on the full
assets) is submitted with the CLI from a project directory that is uploaded as the job's
working directory, its logs are followed to the end, and the results table is read. The
head's processes, and the job driver Ray starts in a session of its own, are stopped by
PID: the ones whose environment holds this test's unique token. `ray stop` would stop
every Ray on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_holding(secret: str) -> list[int]:
    """Processes (other than this one) whose environment contains ``secret``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if secret.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _stop_when_parent_dies() -> None:
    """The head gets SIGTERM if this test process is killed before its teardown runs."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@pytest.fixture(scope="module")
def token_head():
    """A real Ray head with token auth on; yields (dashboard address, token)."""
    import requests

    token = "annealscale-test-" + uuid.uuid4().hex
    temp_dir = tempfile.mkdtemp(prefix="asjobs-")  # short: Ray's socket paths must fit
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` = this venv
    }
    env.pop("PYTHONPATH", None)  # the job must run the code it uploads, not this checkout
    env.pop("RAY_ADDRESS", None)
    dashboard = _free_port()
    ports = {
        "--port": _free_port(),
        "--dashboard-port": dashboard,
        "--ray-client-server-port": _free_port(),
        "--dashboard-agent-listen-port": _free_port(),
        "--dashboard-agent-grpc-port": _free_port(),
        "--metrics-export-port": _free_port(),
        "--runtime-env-agent-port": _free_port(),
    }
    command = [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--temp-dir={temp_dir}",
        "--num-cpus=4",
        "--disable-usage-stats",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]
    head_log = open(Path(temp_dir) / "head.log", "w")  # noqa: SIM115 - closed at teardown
    head = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        stdout=head_log,
        stderr=subprocess.STDOUT,
        preexec_fn=_stop_when_parent_dies,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                r = requests.get(
                    f"{address}/api/version",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=5,
                )
                if r.status_code == 200:
                    break
            except requests.RequestException:
                pass
            if head.poll() is not None or time.time() > deadline:
                raise RuntimeError(
                    "the test's Ray head did not come up: "
                    + (Path(temp_dir) / "head.log").read_text()[-2000:]
                )
            time.sleep(1)
        yield address, token
    finally:
        try:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        for pid in [head.pid, *_pids_holding(token)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        head_log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _project(root: Path, tiny_assets, storage: Path) -> Path:
    """A user's project directory: a spec whose inputs are absolute paths (the annealscale
    package travels beside it as the job's ``py_modules``)."""
    root.mkdir(parents=True)
    (root / "runs").mkdir()
    (root / "runs" / "big-local-output.bin").write_bytes(b"\0" * 1024)  # excluded from upload
    resolve = tiny_assets.resolve
    spec = {
        "name": "jobs-e2e",
        "base_model": {"path": resolve("demo:base")},
        "replay": {"path": resolve("demo:general_train")},
        "eval": {
            "domain": {"path": resolve("demo:math_eval")},
            "general": {"path": resolve("demo:general_eval")},
            "max_tokens": 2048,
        },
        "sources": [
            {
                "name": "textbook",
                "kind": "as_is",
                "params": {"path": resolve("demo:math_train"), "usd_per_token": 1e-5},
            }
        ],
        "grid": {"curation_spend": [0.05], "train_tokens": [2048, 4096]},
        "domain_fraction": 0.5,
        "schedule": {"peak_lr": 2e-3, "warmup_fraction": 0.1},
        "train": {"seq_len": 64, "batch_size": 16, "micro_batch_size": 8, "zero_stage": 1},
        "prices": {"usd_per_pflop": 500.0},
        "storage_path": str(storage),
    }
    (root / "specs").mkdir()
    (root / "specs" / "sweep.yaml").write_text(yaml.safe_dump(spec))
    return root


def _cli(args: list[str], cwd: Path, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
    env.pop("RAY_ADDRESS", None)
    env["PYTHONPATH"] = str(REPO)
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "annealscale.cluster.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def submitted(token_head, tiny_assets, tmp_path_factory):
    address, token = token_head
    root = tmp_path_factory.mktemp("jobs")
    project = _project(root / "project", tiny_assets, root / "storage")
    token_file = root / "token"
    token_file.write_text(token + "\n")
    out = root / "results"
    done = _cli(
        [
            "submit",
            "specs/sweep.yaml",
            "--address",
            address,
            "--token-file",
            str(token_file),
            "--out",
            str(out),
            "--submission-id",
            "jobs-e2e-1",
            "--entrypoint-num-cpus",
            "0.5",
            "--env",
            "HF_HUB_OFFLINE=1",
            "--no-analyze",
            "--follow",
        ],
        cwd=project,
    )
    return address, token, root, out, done


def test_submitted_sweep_runs_and_writes_the_results_table(submitted):
    _, _, _, out, done = submitted
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "submitted: jobs-e2e-1" in done.stdout
    assert "sweep: 2 finished, 0 failed" in done.stdout  # the job's own log line, followed
    assert done.stdout.rstrip().endswith("job jobs-e2e-1: SUCCEEDED")
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 2 and (table["status"] == "finished").all()
    assert sorted(table["train_tokens"]) == [2048, 4096]
    assert table["domain_bpb"].notna().all()


def test_job_ran_the_uploaded_copy_with_the_excludes(submitted):
    from ray.job_submission import JobSubmissionClient

    address, token, root, out, _ = submitted
    client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
    info = client.get_job_info("jobs-e2e-1")
    assert info.entrypoint == (
        f"python -m annealscale.cluster.cli sweep specs/sweep.yaml --out {root / 'results'} --no-analyze"
    )
    assert info.runtime_env["working_dir"].startswith("gcs://")  # uploaded, not a local path
    assert [m[:6] for m in info.runtime_env["py_modules"]] == ["gcs://"]  # the package too
    assert "runs/" in info.runtime_env["excludes"]
    assert info.metadata == {"annealscale_spec": "jobs-e2e", "annealscale_out": str(out)}


def test_status_and_logs_commands_authenticate_from_the_environment(submitted):
    address, token, root, _, _ = submitted
    status = _cli(
        ["jobs", "status", "jobs-e2e-1", "--address", address], root, RAY_AUTH_TOKEN=token
    )
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("jobs-e2e-1: SUCCEEDED")
    logs = _cli(["jobs", "logs", "jobs-e2e-1", "--address", address], root, RAY_AUTH_TOKEN=token)
    assert logs.returncode == 0 and "sweep: 2 finished" in logs.stdout


def test_resubmitting_the_same_id_does_not_start_a_second_job(submitted):
    address, token, root, out, _ = submitted
    again = _cli(
        ["submit", "specs/sweep.yaml", "--address", address, "--out", str(out)]
        + ["--submission-id", "jobs-e2e-1"],
        root / "project",
        RAY_AUTH_TOKEN=token,
    )
    assert again.returncode == 0, again.stderr
    assert "already submitted: jobs-e2e-1" in again.stdout


def test_a_wrong_or_missing_token_is_one_clear_line(submitted):
    address, token, root, out, _ = submitted
    wrong = "wrong-" + uuid.uuid4().hex
    for env, expected in (
        ({"RAY_AUTH_TOKEN": wrong}, "the cluster rejected the token from $RAY_AUTH_TOKEN"),
        ({}, "the cluster requires a token"),
    ):
        done = _cli(["jobs", "status", "jobs-e2e-1", "--address", address], root, **env)
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(f"annealscale: error: {address}: {expected}")
        assert wrong not in done.stderr + done.stdout


def test_the_token_is_written_nowhere(submitted):
    from ray.job_submission import JobSubmissionClient

    address, token, root, out, done = submitted
    assert token not in done.stdout + done.stderr
    client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
    info = client.get_job_info("jobs-e2e-1")
    assert token not in repr(info)  # entrypoint, runtime env, metadata as the cluster keeps them
    assert token not in client.get_job_logs("jobs-e2e-1")
    written = [p for p in root.rglob("*") if p.is_file() and p.name != "token"]
    assert any(p.name == "results.parquet" for p in written)
    assert any(p.name == "provenance.json" for p in written)
    leaked = [str(p) for p in written if token.encode() in p.read_bytes()]
    assert leaked == []
