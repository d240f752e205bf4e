"""Child processes that never outlive their parent.

Each child runs in its own session (a terminal's Ctrl-C reaches only the supervisor, which then
stops children in order) and asks Linux to signal it if the parent dies, so not even a SIGKILLed
parent leaves a broker or database behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None]:
    def setup() -> None:
        if sys.platform == "linux":
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, sig)
            # The parent may already have died between fork and prctl.
            if os.getppid() == 1:
                os.kill(os.getpid(), sig)

    return setup


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived while `raise_on_stop_signals` was in force."""


# A stop signal's handler raises StopRequested wherever the main thread happens to be. Inside
# Popen's bookkeeping that could leave its internal lock held, and every later wait() on that
# child would hang, the orderly stop included. So sections that touch Popen defer the raise to
# their end. The deferral is a Python flag, not a signal mask: a mask is per thread, and with any
# other thread alive the kernel hands a process-directed signal to that thread instead, whose
# C handler then trips the main thread's Python handler at some later, arbitrary point.
_deferring = 0
_pending: int | None = None


def _on_stop_signal(signum: int, _frame: FrameType | None) -> None:
    global _pending
    if _deferring:
        _pending = signum
        return
    raise StopRequested(signal.Signals(signum).name)


def raise_on_stop_signals() -> None:
    """From now on SIGINT and SIGTERM raise StopRequested in the main thread (never inside a
    ManagedProcess's Popen bookkeeping)."""
    signal.signal(signal.SIGINT, _on_stop_signal)
    signal.signal(signal.SIGTERM, _on_stop_signal)


def ignore_stop_signals() -> None:
    """Nothing may interrupt what follows (an orderly stop): ignores, and forgets a deferred one."""
    global _pending
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _pending = None


@contextlib.contextmanager
def _stop_deferred() -> Iterator[None]:
    global _deferring, _pending
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if not _deferring and _pending is not None:
        signum, _pending = _pending, None
        raise StopRequested(signal.Signals(signum).name)


class ManagedProcess:
    """A child process with a name, a log file and an orderly stop signal."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self._log: IO[bytes] | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = log_path.open("ab")
        out = self._log if self._log is not None else None
        self.popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            user=user,
            preexec_fn=_die_with_parent(stop_signal),
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        with _stop_deferred():
            return self.popen.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """Sends the stop signal, waits up to `timeout`, then kills. Returns the exit code."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        if self._log is not None:
            self._log.close()
        return self.popen.returncode


def wait_for(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    alive: ManagedProcess | None = None,
) -> None:
    """Polls `check` until it is true; fails early if `alive` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if alive is not None and not alive.running():
            raise RuntimeError(f"{what}: process exited with code {alive.popen.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(interval)
