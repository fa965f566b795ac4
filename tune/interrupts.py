"""Ctrl-C (SIGINT) and SIGTERM during a sweep: stop the running cells cleanly, then end.

While Ray Tune runs, the first signal asks Tune to stop (its SIGUSR1 path: it stops the
running trials, whose Train runs keep their last checkpoints, and saves the experiment
state so ``--resume`` continues); `SweepInterrupted` is raised once Tune has returned, and
the sweep writes no results, summaries or provenance over what is there. Outside Tune
(planning, curation), or on a second signal, `SweepInterrupted` is raised at once.
The CLI turns it into exit code 128 + signal (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was stopped by a signal; ``signum`` names it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Interrupts:
    """Context manager owning SIGINT and SIGTERM for a sweep (main thread only; elsewhere
    it does nothing). ``tune_running()`` brackets a Tune ``fit``; ``check()`` raises if a
    signal came."""

    def __init__(self):
        self.signum: int | None = None
        self._in_tune = False
        self._saved: dict[int, object] = {}
        self._env: str | None = None

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in SIGNALS:
            self._saved[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        # Tune would otherwise replace the SIGINT handler with its own for each fit
        self._env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        if self._saved:
            if self._env is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._env

    def _handle(self, signum, frame) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        name = signal.Signals(signum).name
        if first and self._in_tune and hasattr(signal, "SIGUSR1"):
            log.warning("%s: stopping the running cells; finished cells are kept", name)
            os.kill(os.getpid(), signal.SIGUSR1)  # Tune's own graceful stop
            return
        raise SweepInterrupted(self.signum or signum)

    def tune_running(self) -> _TuneSection:
        return _TuneSection(self)

    def check(self) -> None:
        if self.signum is not None:
            raise SweepInterrupted(self.signum)


class _TuneSection:
    def __init__(self, owner: Interrupts):
        self.owner = owner

    def __enter__(self):
        self.owner.check()
        self.owner._in_tune = True

    def __exit__(self, *exc):
        self.owner._in_tune = False
        if exc[0] is None:
            self.owner.check()
