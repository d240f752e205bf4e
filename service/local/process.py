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


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Delays SIGINT and SIGTERM (they stay pending) until the block is over."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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
        # `roster dev` stops by raising from its signal handler. Landing inside Popen.poll, that
        # could leave Popen's internal lock held, and every later wait() on the process would
        # then hang: the signals wait (blocked) until the poll is over.
        with _signals_held():
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
