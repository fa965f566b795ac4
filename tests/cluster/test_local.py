"""The embedded local Ray: a failed start is one line that never advises ``ray stop`` (it
would end every Ray on the host, other users' included), and leaves Ray shut down."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import ray
from annealscale.cluster.local import connect
from annealscale.core.errors import AnnealscaleError
try:
    connect(num_cpus=-1)  # Ray refuses a negative CPU count while starting its node
except AnnealscaleError as err:
    print("ERROR", err)
print("INITIALIZED", ray.is_initialized())
"""


@pytest.mark.slow
def test_a_failed_local_start_is_one_line_without_ray_stop(tmp_path):
    # A process of its own: the suite's shared local Ray must not be the one refused.
    env = {"RAY_ADDRESS": "", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env
    )
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert lines.get("INITIALIZED") == "False", done.stdout + done.stderr
    error = lines["ERROR"]
    assert error.startswith("cannot start a local Ray instance")
    assert "ray stop" not in error
    assert "--address" in error
