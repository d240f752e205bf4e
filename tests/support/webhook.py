"""Signed webhook deliveries, as a relay in front of Clever would send them."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import orjson

from service.settings import decode_webhook_secret
from service.webhooks.signature import sign

SECRET = "whsec_" + base64.b64encode(b"roster-sync test secret, 32 b!!!").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"an older secret being rotated out").decode()
ADMIN_TOKEN = "test-admin-token-0123456789"


def signed_headers(
    body: bytes,
    *,
    secret: str = SECRET,
    webhook_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(decode_webhook_secret(secret), webhook_id, timestamp, body),
    }


def encode(document: Any) -> bytes:
    return orjson.dumps(document)
