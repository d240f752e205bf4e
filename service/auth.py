"""Bearer-token authentication of the admin and query API (`/v1/*`)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request


def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    token = request.app.state.settings.admin_token.get_secret_value()
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            status_code=401,
            detail="a valid admin bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


AdminOnly = Depends(require_admin)
