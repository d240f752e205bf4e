"""`roster dev` stops by raising StopRequested from its signal handler; a child's `running()` check
defers that raise until Popen's poll is over (else a signal landing inside it could leave Popen's
lock held, and the orderly stop would hang on that child forever)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator

import pytest

from devstack.process import (
    ManagedProcess,
    StopRequested,
    ignore_stop_signals,
    raise_on_stop_signals,
)


@pytest.fixture
def stop_signals_raise() -> Iterator[None]:
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    raise_on_stop_signals()
    try:
        yield
    finally:
        ignore_stop_signals()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@pytest.fixture
def sleeper() -> Iterator[ManagedProcess]:
    child = ManagedProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        yield child
    finally:
        ignore_stop_signals()
        assert child.stop(timeout=5) is not None  # the process can still be waited for


@pytest.mark.usefixtures("stop_signals_raise")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_during_the_poll_is_raised_after_it(
    sleeper: ManagedProcess, sig: signal.Signals
) -> None:
    # Another thread alive, as in a test run or a process with a thread pool: the deferral must
    # not depend on which thread the kernel hands the signal to.
    idle = threading.Event()
    bystander = threading.Thread(target=idle.wait, daemon=True)
    bystander.start()
    events: list[str] = []
    real_poll = sleeper.popen.poll

    def poll_interrupted() -> int | None:
        # raise_signal runs the Python handler before it returns: here, inside the poll.
        signal.raise_signal(sig)
        result = real_poll()
        events.append("poll done")
        return result

    sleeper.popen.poll = poll_interrupted  # type: ignore[method-assign]
    try:
        with pytest.raises(StopRequested, match=sig.name):
            sleeper.running()
        assert events == ["poll done"]
    finally:
        sleeper.popen.poll = real_poll  # type: ignore[method-assign]
        idle.set()
        bystander.join()
    assert sleeper.running()  # raised once, not again


@pytest.mark.usefixtures("stop_signals_raise")
def test_a_stop_signal_elsewhere_raises_at_once() -> None:
    with pytest.raises(StopRequested, match="SIGTERM"):
        signal.raise_signal(signal.SIGTERM)


@pytest.mark.usefixtures("stop_signals_raise")
def test_a_deferred_stop_signal_is_forgotten_once_stop_signals_are_ignored(
    sleeper: ManagedProcess,
) -> None:
    # The orderly stop ignores stop signals, then polls each child: a signal deferred by a poll
    # that failed (so it was never raised) must not interrupt that stop.
    real_poll = sleeper.popen.poll

    def poll_failing() -> int | None:
        signal.raise_signal(signal.SIGINT)
        raise ChildProcessError

    sleeper.popen.poll = poll_failing  # type: ignore[method-assign]
    try:
        with pytest.raises(ChildProcessError):
            sleeper.running()
    finally:
        sleeper.popen.poll = real_poll  # type: ignore[method-assign]
    ignore_stop_signals()
    signal.raise_signal(signal.SIGTERM)
    assert sleeper.running()
