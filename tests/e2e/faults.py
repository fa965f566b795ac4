"""What the fault tests share: reading a storage path's finished cells, starting the CLI
sweep in its own process group and killing or interrupting it at a fault point, and the
small Ray clusters the cluster faults run against (each in its own process, so a test can
remove a node or share one Ray between two sweep drivers)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def event_tags(path: Path) -> set[str]:
    """Scalar tags in a TensorBoard event file (TFRecord framing: length, CRC, data, CRC)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    blob, tags, offset = path.read_bytes(), set(), 0
    while offset < len(blob):
        (length,) = struct.unpack_from("<Q", blob, offset)
        event = Event.FromString(blob[offset + 12 : offset + 12 + length])
        tags |= {value.tag for value in event.summary.value}
        offset += 12 + length + 4
    return tags


def cell_files(storage: Path) -> dict[str, tuple[bytes, int]]:
    cells = storage / "results" / "cells"
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in cells.glob("*.parquet")}


def descendants(pid: int) -> set[tuple[int, str]]:
    """Live descendants of ``pid`` as (pid, start time) pairs, read from /proc."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        child = int(stat.parent.name)
        parents.setdefault(int(fields[1]), []).append(child)
        starts[child] = fields[19]
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add((child, starts[child]))
            todo.append(child)
    return found


def alive(processes: set[tuple[int, str]]) -> set[tuple[int, str]]:
    out = set()
    for pid, start in processes:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[19] == start and stat[0] != "Z":
            out.add((pid, start))
    return out


def alive_after(processes: set[tuple[int, str]], seconds: float) -> set[tuple[int, str]]:
    """Those of ``processes`` still alive once all have exited or ``seconds`` have passed."""
    deadline = time.time() + seconds
    while (left := alive(processes)) and time.time() < deadline:
        time.sleep(0.2)
    return left


def interrupt_when(tools, args, env, log_path, ready, send):
    """Start the CLI sweep, call ``send(process)`` once ``ready(log text)``; returns (exit
    code, log text, the Ray processes it had started)."""
    proc = start(tools, args, env, log_path)
    seen: set[tuple[int, str]] = set()
    deadline = time.time() + 1200
    try:
        while not ready(log_path.read_text()):
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "the sweep never got there"
            seen |= descendants(proc.pid)
            time.sleep(0.5)
        seen |= descendants(proc.pid)
        send(proc)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return code, log_path.read_text(), seen


ONE_NODE_CLUSTER = """
import sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4})
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()  # until the test closes our stdin
cluster.shutdown()
"""


def fill(directory: Path) -> Path:
    """Fill the file system holding ``directory`` to the last byte; the ballast file."""
    ballast = directory / "ballast"
    with ballast.open("wb", buffering=0) as f:  # unbuffered: closing never flushes into ENOSPC
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass
    return ballast


def kill_group_when(proc, log_path: Path, ready, timeout: float = 1200) -> None:
    """SIGKILL ``proc``'s process group (the driver and its local Ray) once ``ready()``."""
    deadline = time.time() + timeout
    try:
        while not ready():
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "the fault point was never reached"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def start(tools, args, env, log_path: Path):
    """Start the CLI with ``args`` in its own session, output to ``log_path``: the driver
    and the local Ray it starts form one process group, to kill or interrupt together."""
    with log_path.open("w") as log:
        return subprocess.Popen(
            tools.cli(*args),
            env=env,
            cwd=tools.repo,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


WORKER_NODE_CLUSTER = """
import sys
from ray.cluster_utils import Cluster

# The head holds only the trial drivers (custom resource 'head'); the anneal's Train
# worker needs a whole CPU, which only a worker node has.
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
node = cluster.add_node(num_cpus=2)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
for line in sys.stdin:
    if line.strip() == "remove":
        cluster.remove_node(node)  # the whole node: its raylet and every process on it
        node = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        print("removed", flush=True)
cluster.shutdown()
"""
