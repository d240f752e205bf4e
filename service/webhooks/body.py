"""Reads an ASGI request body with a hard byte limit, refusing early rather than buffering it,
and a deadline: the body is read before the signature can be checked, so without one any client
could hold a connection and up to the limit's memory for as long as it likes."""

from __future__ import annotations

import asyncio

from starlette.types import Receive

# The whole body must arrive within this: 5 MiB at 200 KB/s, far slower than any sender that
# relays Clever's events from a server.
BODY_DEADLINE_S = 30.0


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class BodyTimeout(Exception):
    pass


async def read_limited(
    receive: Receive,
    declared_length: bytes | None,
    limit: int,
    deadline_s: float = BODY_DEADLINE_S,
) -> bytes:
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
        raise BodyTooLarge  # refused before a byte of the body is read
    try:
        async with asyncio.timeout(deadline_s):
            return await _read(receive, limit)
    except TimeoutError:
        raise BodyTimeout from None


async def _read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge  # an undeclared (chunked) or endless body stops here
        if not message.get("more_body", False):
            return b"".join(chunks)  # one chunk (the usual case) comes back as is, not copied
