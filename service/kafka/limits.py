"""How large a Kafka record may be, for every producer, topic and consumer alike."""

from __future__ import annotations

from schemas.clever import MAX_EVENT_BYTES

# The largest record any producer sends, any topic takes (`max.message.bytes`) and any consumer
# fetches: the largest event the doors accept, with its key and headers (a dead letter adds its
# error), or the `roster.changes.v1` message of the largest section (its ids as compact as the
# event's: the outbox stores orjson's output). A MiB of headroom covers those additions.
MAX_RECORD_BYTES = MAX_EVENT_BYTES + 1024 * 1024
