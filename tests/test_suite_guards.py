"""The suite's own guards: a hung test fails by its timeout instead of stalling CI."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_test_runs_under_a_timeout(pytestconfig):
    assert 0 < float(pytestconfig.getini("timeout")) <= 900  # well inside CI's 90 minutes


def test_a_hung_test_fails_by_its_timeout(tmp_path):
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hang():\n    time.sleep(120)\n")
    started = time.monotonic()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(REPO / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            "-p",
            "no:cacheprovider",
            "-o",
            "timeout=2",
            str(tmp_path / "test_hang.py"),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
    )
    assert run.returncode == 1, run.stdout[-2000:]
    assert "Timeout" in run.stdout and "1 failed" in run.stdout
    assert time.monotonic() - started < 60
