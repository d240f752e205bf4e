"""What the Clever client raises. Messages name districts and paths, never a token."""

from __future__ import annotations


class CleverError(Exception):
    """Any failure of a call to Clever that the client does not handle itself."""


class TokenRejected(CleverError):
    """401 even after re-reading the district's token (or no token to re-read): the district is
    `token_invalid` until its token changes."""

    def __init__(self, district_id: str) -> None:
        super().__init__(f"Clever refused the token of district {district_id}")
        self.district_id = district_id


class CursorRefused(CleverError):
    """`/v3.0/events?starting_after=<cursor>` answered 404, 400 or 410: Clever no longer has (or
    never had) that event, so the district must be backfilled."""

    def __init__(self, district_id: str, cursor: str, status: int) -> None:
        super().__init__(f"Clever refused cursor {cursor} of district {district_id} ({status})")
        self.district_id = district_id
        self.cursor = cursor
        self.status = status


class CleverUnavailable(CleverError):
    """Retries exhausted; `kind` is the last failure: server_error, timeout or connection."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"Clever unavailable ({kind}): {detail}")
        self.kind = kind


class UnexpectedAnswer(CleverError):
    """An answer the client has no rule for (another 4xx, a body that is not Clever's envelope).
    Not retried: asking again would get the same answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"unexpected answer from Clever ({status}): {detail}")
        self.status = status


class AppCredentialsRejected(CleverError):
    """The OAuth token list refused the app's client id and secret (401/403)."""

    def __init__(self) -> None:
        super().__init__("Clever refused the app's client id and secret (ROSTER_CLEVER_CLIENT_*)")
