"""Reads an ASGI request body with a hard byte limit, refusing early rather than buffering it."""

from __future__ import annotations

from starlette.types import Receive


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


async def read_limited(receive: Receive, declared_length: bytes | None, limit: int) -> bytes:
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
        raise BodyTooLarge  # refused before a byte of the body is read
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
