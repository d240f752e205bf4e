"""Times as the API answers them."""

from __future__ import annotations

from datetime import datetime


def iso(value: datetime | None) -> str | None:
    """ISO 8601, or None where there is no time (not yet applied, acknowledged, resolved)."""
    return value.isoformat() if value is not None else None
