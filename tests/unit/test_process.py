"""`roster dev` stops by raising from its signal handler; a child's `running()` check holds the
stop signals until Popen's poll is over (else a signal landing inside it could leave Popen's lock
held, and the orderly stop would hang on that child forever)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType

import pytest

from service.local.process import ManagedProcess


class _Stop(Exception):
    pass


@pytest.fixture
def raising_sigint() -> Iterator[list[str]]:
    events: list[str] = []

    def handler(_signum: int, _frame: FrameType | None) -> None:
        events.append("handler")
        raise _Stop

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield events
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_stop_signal_during_the_poll_is_handled_after_it(raising_sigint: list[str]) -> None:
    child = ManagedProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(30)"])
    real_poll = child.popen.poll

    def poll_interrupted() -> int | None:
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the poll runs
        result = real_poll()
        raising_sigint.append("poll done")
        return result

    child.popen.poll = poll_interrupted  # type: ignore[method-assign]
    try:
        with pytest.raises(_Stop):
            child.running()
        assert raising_sigint == ["poll done", "handler"]
    finally:
        child.popen.poll = real_poll  # type: ignore[method-assign]
        assert child.stop(timeout=5) is not None  # the process can still be waited for
