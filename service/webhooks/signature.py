"""Standard Webhooks signature verification (pure: no I/O, clock passed in).

The signed content is the exact bytes `{webhook-id}.{webhook-timestamp}.{raw body}`; the signature
header lists space-separated `v1,<base64 HMAC-SHA256>` entries (several during secret rotation), and
any one of them matching any configured key is enough. Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class SignatureError(Exception):
    """Why a delivery is not authentic; the message is safe to return to the sender."""


@dataclass(frozen=True)
class SignedDelivery:
    webhook_id: str
    timestamp: int


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of a delivery (used by tests, benchmarks and relays)."""
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(
    headers: Mapping[str, str],
    body: bytes,
    keys: Sequence[bytes],
    *,
    now: float,
    tolerance: int = 300,
) -> SignedDelivery:
    webhook_id = headers.get("webhook-id")
    timestamp_text = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    for name, value in (
        ("webhook-id", webhook_id),
        ("webhook-timestamp", timestamp_text),
        ("webhook-signature", signatures),
    ):
        if not value:
            raise SignatureError(f"missing {name} header")
    assert webhook_id is not None and timestamp_text is not None and signatures is not None
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise SignatureError("webhook-timestamp is not a Unix time in seconds") from None
    if abs(now - timestamp) > tolerance:
        raise SignatureError("webhook-timestamp is outside the accepted tolerance")

    given: list[bytes] = []
    for entry in signatures.split(" "):
        version, _, encoded = entry.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            given.append(base64.b64decode(encoded, validate=True))
        except ValueError:
            continue
    if not given:
        raise SignatureError("webhook-signature holds no v1 signature")

    signed = f"{webhook_id}.{timestamp}.".encode() + body
    matched = False
    for key in keys:
        expected = hmac.digest(key, signed, hashlib.sha256)  # one-shot, in C
        for candidate in given:
            # No early exit: the time taken does not depend on which entry matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no valid signature")
    return SignedDelivery(webhook_id, timestamp)
