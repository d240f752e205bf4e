"""Bearer-token authentication of the admin and query API (`/v1/*`)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException

from service.deps import SettingsDep


def require_admin(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    # Required of the API process: `roster api` refuses to start without it (service/cli.py).
    assert settings.admin_token is not None, "ROSTER_ADMIN_TOKEN is not set"
    token = settings.admin_token.get_secret_value()
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            status_code=401,
            detail="a valid admin bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


AdminOnly = Depends(require_admin)
