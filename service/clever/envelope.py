"""Clever's list envelope, read without I/O:
`{"data": [{"data": <record>, "uri": ...}, ...], "links": [{"rel": "next", "uri": ...}, ...]}`.
Events pages wrap each event the same way (`{"data": <event>}`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from service.clever.errors import UnexpectedAnswer


@dataclass(frozen=True)
class Page:
    """One page of a list: the inner `data` of each item, the body as it came (events pages go to
    the webhook's parser as is), the next link (relative to the API host; None on the last page)
    and the URI this page was read from."""

    records: list[dict[str, Any]]
    body: bytes
    next_uri: str | None
    uri: str = ""


def read_page(body: bytes, *, status: int = 200, uri: str = "") -> Page:
    """The page in `body`; UnexpectedAnswer when it is not Clever's envelope."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UnexpectedAnswer(status, f"{uri}: the body is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise UnexpectedAnswer(status, f"{uri}: no data list in the body")
    records: list[dict[str, Any]] = []
    for item in document["data"]:
        inner = item.get("data") if isinstance(item, dict) else None
        if not isinstance(inner, dict):
            raise UnexpectedAnswer(status, f"{uri}: an item without a data object")
        records.append(inner)
    return Page(records=records, body=body, next_uri=next_link(document.get("links")), uri=uri)


def next_link(links: object) -> str | None:
    """The `rel=next` URI of a `links` list, if any."""
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("rel") == "next":
            uri = link.get("uri")
            if isinstance(uri, str) and uri:
                return uri
    return None
