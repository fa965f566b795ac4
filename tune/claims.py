"""Claims: which sweep is training a cell now, so sweeps sharing a storage path never train
one cell twice.

A claim is ``<results>/claims/<cell identity>.json``, created with ``O_EXCL`` by the sweep
that is about to train the cell. It names its owner (one id per sweep run) and the sweep
driver's host and process id; its modification time is the heartbeat. The sweep driver
takes the claim before Tune starts the cell's trial (`tune.claimed_cells`), refreshes the
heartbeat of every claim it holds while its trials run (`Claims.keep_alive`), and removes
a claim once the cell's row is written. Another sweep that finds a live claim leaves the
cell to its holder (it runs its other cells first, then skips the cell once its row is
there). A claim is stale, and taken over, when its heartbeat is older than
``stale_seconds`` or when its driver process on this host is gone (a plain rerun after a
killed sweep does not wait out the timeout). Takeover happens under a file lock, so two
sweeps cannot both take over one stale claim.

Claims need a local or mounted storage path (``O_EXCL`` and a shared lock file); for an
object-store URI they are not kept and concurrent sweeps of one spec are not supported.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from annealscale.core.processes import pid_alive
from annealscale.tune.storage import is_uri

log = logging.getLogger(__name__)

STALE_SECONDS = 300.0
"""Default heartbeat age after which a claim counts as abandoned
(``ANNEALSCALE_CLAIM_STALE_SECONDS`` overrides)."""


def stale_seconds_from_env() -> float:
    return float(os.environ.get("ANNEALSCALE_CLAIM_STALE_SECONDS", STALE_SECONDS))


def new_owner() -> dict:
    """This sweep run's identity as a claim owner."""
    return {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}


@dataclass(frozen=True)
class Claims:
    results_root: str
    owner: dict
    stale_seconds: float = STALE_SECONDS

    @property
    def enabled(self) -> bool:
        return not is_uri(self.results_root) or self.results_root.startswith("file://")

    @property
    def directory(self) -> Path:
        root = self.results_root.removeprefix("file://")
        return Path(root) / "claims"

    def path(self, identity: str) -> Path:
        return self.directory / f"{identity}.json"

    def holder(self, identity: str) -> dict | None:
        """The claim's record plus its heartbeat age (``age``), or None if unclaimed."""
        path = self.path(identity)
        try:
            record = json.loads(path.read_text() or "{}")
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            record, age = {}, 0.0  # being written right now: treat as live
        return {**record, "age": age}

    def _stale(self, record: dict) -> bool:
        if record["age"] > self.stale_seconds:
            return True
        same_host = record.get("host") == socket.gethostname()
        return bool(same_host and record.get("pid") and not pid_alive(int(record["pid"])))

    def acquire(self, identity: str) -> bool:
        """Claim ``identity`` for this owner; False while another owner's claim is live."""
        if not self.enabled:
            return True
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._create(identity):
            return True
        record = self.holder(identity)
        if record is None:
            return self._create(identity)
        if record.get("owner") == self.owner["owner"]:
            os.utime(self.path(identity))  # a retry of our own trial
            return True
        if not self._stale(record):
            return False
        from filelock import FileLock

        with FileLock(str(self.directory / ".takeover.lock")):
            record = self.holder(identity)
            if record is not None and not self._stale(record):
                return False
            log.warning(
                "cell %s: taking over a stale claim of sweep %s on %s (heartbeat %.0f s ago)",
                identity,
                (record or {}).get("owner", "?"),
                (record or {}).get("host", "?"),
                (record or {}).get("age", 0.0),
            )
            self.path(identity).unlink(missing_ok=True)
            return self._create(identity)

    def _create(self, identity: str) -> bool:
        try:
            fd = os.open(self.path(identity), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({**self.owner, "claimed_at": time.time()}, f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def release(self, identity: str) -> None:
        """Remove the claim if this owner holds it."""
        if not self.enabled:
            return
        record = self.holder(identity)
        if record is not None and record.get("owner") == self.owner["owner"]:
            self.path(identity).unlink(missing_ok=True)

    def held(self) -> list[str]:
        """Identities this owner holds a claim on."""
        if not self.enabled or not self.directory.is_dir():
            return []
        mine = []
        for path in self.directory.glob("*.json"):
            record = self.holder(path.stem)
            if record is not None and record.get("owner") == self.owner["owner"]:
                mine.append(path.stem)
        return sorted(mine)

    def heartbeat(self, identity: str) -> Heartbeat:
        return Heartbeat(self, identity)

    def keep_alive(self) -> Heartbeat:
        """A heartbeat for every claim this owner holds, whenever it took it: the sweep
        driver's, for as long as its trials run. On exit the claims still held are released
        (their cells have no trial running any more: the sweep ended, failed or was
        interrupted), so another sweep need not wait for them to go stale."""
        return Heartbeat(self, None)


class Heartbeat(threading.Thread):
    """Refreshes a claim's heartbeat (``identity``; None: every claim its owner holds) every
    quarter of the stale timeout until stopped; a context manager."""

    def __init__(self, claims: Claims, identity: str | None):
        super().__init__(daemon=True, name=f"claim-{identity or 'all'}")
        self.claims = claims
        self.identity = identity
        self.stopped = threading.Event()

    def run(self):
        every = max(self.claims.stale_seconds / 4, 0.5)
        while not self.stopped.wait(every):
            for identity in self.claims.held() if self.identity is None else [self.identity]:
                try:
                    os.utime(self.claims.path(identity))
                except FileNotFoundError:
                    if self.identity is not None:
                        log.warning("cell %s: its claim disappeared while training", identity)
                        return

    def __enter__(self) -> Heartbeat:
        if self.claims.enabled:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        if self.identity is None:
            for identity in self.claims.held():
                self.claims.release(identity)
