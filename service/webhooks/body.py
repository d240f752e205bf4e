"""Reads a request body with a hard byte limit, refusing early rather than buffering it whole."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    pass


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge  # refused before a byte of the body is read
    buffer = bytearray()
    async for chunk in request.stream():
        buffer += chunk
        if len(buffer) > limit:
            raise BodyTooLarge  # an undeclared (chunked) or endless body stops here
    return bytes(buffer)
