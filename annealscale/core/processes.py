"""Whether a process of this host still runs, for state left by a process that may be dead."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while a process with this id runs on this host (another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
