"""Dev credentials (webhook secret, admin token) used when the environment gives none.

Kept in `.local/dev-credentials.json` (mode 0600) so they stay the same across restarts.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import orjson


@dataclass(frozen=True)
class DevCredentials:
    webhook_secret: str
    admin_token: str


def load_or_create(home: Path) -> DevCredentials:
    path = home / "dev-credentials.json"
    if path.is_file():
        data = orjson.loads(path.read_bytes())
        return DevCredentials(data["webhook_secret"], data["admin_token"])
    creds = DevCredentials(
        webhook_secret="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        admin_token="dev_" + secrets.token_urlsafe(24),
    )
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps(vars(creds)))
    tmp.replace(path)
    return creds
