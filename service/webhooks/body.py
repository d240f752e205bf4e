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
    buffer = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        buffer += message.get("body", b"")
        if len(buffer) > limit:
            raise BodyTooLarge  # an undeclared (chunked) or endless body stops here
        if not message.get("more_body", False):
            return bytes(buffer)
