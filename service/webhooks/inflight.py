"""The door's in-flight registry: the Kafka send of each event id still on its way.

aiokafka's idempotent producer retries a buffered record until the broker takes it, even after
the door gave up waiting. Such sends stay here: a retry of the same event joins the send already
on its way instead of sending a second copy, and a send that lands late has its dedupe row written
(`when_landed`). So a broker outage neither loses an event nor puts it twice on the topic (within
one API process; across replicas the consumer's event-id dedupe absorbs the rare second copy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from service.kafka.batching import SendFuture, succeeded


class InflightSends:
    """Event id -> its latest send, until it is recorded or known to have failed."""

    def __init__(self) -> None:
        self._sends: dict[str, SendFuture] = {}

    def __len__(self) -> int:
        return len(self._sends)

    def joinable(self, eid: str) -> SendFuture | None:
        """An earlier attempt's send of the event, still on its way or landed; None if there is
        none, or it failed (the event is sent again)."""
        earlier = self._sends.get(eid)
        if earlier is not None and not (earlier.done() and not succeeded(earlier)):
            return earlier
        return None

    def add(self, eid: str, future: SendFuture) -> None:
        self._sends[eid] = future

    def forget(self, eid: str) -> None:
        """The event is recorded: a retry is a duplicate, with nothing to join."""
        self._sends.pop(eid, None)

    def forget_send(self, eid: str, future: SendFuture) -> None:
        """Forgets `future` if it is still the event's latest send."""
        if self._sends.get(eid) is future:
            del self._sends[eid]

    def sending(self, eids: Iterable[str]) -> bool:
        """Whether a send of one of `eids` is still waiting for Kafka."""
        sends = self._sends
        return any((f := sends.get(eid)) is not None and not f.done() for eid in eids)

    def when_landed(self, eid: str, landed: Callable[[SendFuture], None]) -> None:
        """Calls `landed(future)` once the event's send succeeds; forgets a send that fails."""
        future = self._sends.get(eid)
        if future is None:
            return  # never sent (publish stopped early): the retry sends it
        if future.done() and not succeeded(future):
            self._sends.pop(eid, None)
            return

        def done(sent: SendFuture) -> None:
            if not succeeded(sent):
                self.forget_send(eid, sent)
                return
            landed(sent)

        future.add_done_callback(done)
