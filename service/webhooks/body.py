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
    first = await receive()
    if first["type"] == "http.request" and not first.get("more_body", False):
        body: bytes = first.get("body", b"")  # the whole body in one message: no copy
        if len(body) > limit:
            raise BodyTooLarge
        return body
    buffer = bytearray()
    message = first
    while True:
        if message["type"] == "http.disconnect":
            raise ClientGone
        buffer += message.get("body", b"")
        if len(buffer) > limit:
            raise BodyTooLarge  # an undeclared (chunked) or endless body stops here
        if not message.get("more_body", False):
            return bytes(buffer)
        message = await receive()
