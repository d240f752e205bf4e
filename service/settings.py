"""Settings from the environment (prefix `ROSTER_`), as the contract lists them.

Nothing here falls back to the local stack: `roster dev` (and the tests) give their processes every
setting explicitly, and a process started on its own without a setting it needs stops at start-up
with one line naming it (`require`).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)


def decode_webhook_secret(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 of 24-64 bytes after `whsec_`."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError("a webhook secret must start with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be 'whsec_' followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"a webhook secret must encode 24 to 64 bytes, not {len(key)}")
    return key


def parse_district_tokens(text: str) -> tuple[tuple[str, SecretStr], ...]:
    """Space-separated `<district id>:<token>` entries. Errors name the entry by its position and
    never repeat its text (a malformed entry may be a bare token)."""
    pairs: list[tuple[str, SecretStr]] = []
    seen: set[str] = set()
    for number, entry in enumerate(text.split(), start=1):
        district_id, sep, token = entry.partition(":")
        if not sep or not district_id or not token:
            raise ValueError(f"entry {number} is not '<district id>:<token>'")
        if district_id in seen:
            raise ValueError(f"entry {number} repeats a district id given before it")
        seen.add(district_id)
        pairs.append((district_id, SecretStr(token)))
    return tuple(pairs)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROSTER_", extra="ignore", frozen=True)

    database_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    webhook_secrets: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    admin_token: SecretStr | None = None
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)
    # API worker processes on one port (uvicorn's supervisor). One suits a container that is
    # scaled by replicas; on a bare host, one per core.
    http_workers: int = Field(1, ge=1, le=64)
    local_kafka_port: int = Field(9092, ge=1, le=65534)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Webhook door limits. Clever pages hold at most 10,000 events; the byte limit binds first.
    webhook_max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    webhook_max_events: int = Field(10_000, ge=1)
    webhook_tolerance_seconds: int = Field(300, ge=1)
    publish_timeout_seconds: float = Field(10.0, gt=0)
    # The door's bounds when a dependency stalls: each database step (claim, commit, release), and
    # the events that may wait for a batch before a request is refused with 503 at once.
    webhook_database_timeout_seconds: float = Field(5.0, gt=0)
    webhook_max_queued_events: int = Field(50_000, ge=1)

    # Consumer batching.
    consumer_group: str = "roster-consumer"
    consumer_max_batch: int = Field(2000, ge=1)
    # Transactions a consumer runs at once on one batch (its partitions split into groups). Four
    # beat two by 7-35% in four interleaved backlog runs: more of the process's work overlaps the
    # database's round trips.
    consumer_concurrency: int = Field(4, ge=1, le=16)
    # Where `roster consume` serves its /metrics (0: not served).
    consumer_metrics_port: int = Field(9101, ge=0, le=65535)

    # Outbox relay: rows per publish round, the poll that backs up LISTEN/NOTIFY, how long sent
    # rows are kept (for inspection and re-publishing by hand), and its /metrics port.
    relay_batch: int = Field(2000, ge=1)
    relay_poll_seconds: float = Field(1.0, gt=0)
    outbox_retention_seconds: int = Field(7 * 24 * 3600, ge=0)
    relay_metrics_port: int = Field(9102, ge=0, le=65535)

    # Durability of the topics the service creates; unset, the cluster's own defaults
    # (`default.replication.factor`, `min.insync.replicas`). Existing topics that fall short of
    # them are reported at start-up, never altered.
    kafka_replication_factor: int | None = Field(None, ge=1, le=32767)
    kafka_min_insync_replicas: int | None = Field(None, ge=1)

    # /docs, /redoc and /openapi.json describe every route to anyone who asks: off unless set
    # (`roster dev` sets it for its own API).
    api_docs: bool = False

    # The pull doors (Clever's Data and Events APIs). Tokens come from the app's OAuth token list
    # (client id and secret) and/or by hand as space-separated "<district id>:<token>".
    clever_api_url: str = "https://api.clever.com"
    clever_oauth_url: str = "https://clever.com"
    clever_client_id: str | None = None
    # validate_default: the pair is checked even when only the id is given.
    clever_client_secret: SecretStr | None = Field(None, validate_default=True)
    clever_district_tokens: Annotated[tuple[tuple[str, SecretStr], ...], NoDecode] = ()
    poll_interval_seconds: float = Field(30.0, gt=0)
    backfill_max_archive_share: float = Field(0.05, ge=0, le=1)
    # Clever's limits: at most 10,000 records a page, 1,200 requests a minute per token.
    clever_page_limit: int = Field(1000, ge=1, le=10_000)
    clever_requests_per_minute: int = Field(1100, ge=1, le=1200)
    clever_timeout_seconds: float = Field(30.0, gt=0)
    poller_metrics_port: int = Field(9103, ge=0, le=65535)
    # A dead poller's districts are taken over within poll_lease_seconds * 4/3 (TTL + renewal).
    poll_lease_seconds: float = Field(15.0, ge=1)
    poll_max_concurrent_districts: int = Field(8, ge=1)

    @field_validator("webhook_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part for part in value.split() if part)
        return value

    @field_validator("webhook_secrets")
    @classmethod
    def _check_secrets(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for secret in value:
            decode_webhook_secret(secret.get_secret_value())
        return value

    @field_validator("admin_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("the admin token must be at least 16 characters")
        return value

    @field_validator("clever_api_url", "clever_oauth_url")
    @classmethod
    def _check_clever_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")) or len(value.rstrip("/")) <= len(
            "https://"
        ):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("clever_client_id")
    @classmethod
    def _blank_client_id(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("clever_client_secret")
    @classmethod
    def _check_client_pair(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        has_id = bool(info.data.get("clever_client_id"))
        has_secret = value is not None and bool(value.get_secret_value())
        if has_id != has_secret:
            raise ValueError(
                "ROSTER_CLEVER_CLIENT_ID and ROSTER_CLEVER_CLIENT_SECRET are set together"
                " or not at all"
            )
        return value if has_secret else None

    @field_validator("clever_district_tokens", mode="before")
    @classmethod
    def _split_district_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_district_tokens(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgresql+asyncpg://")):
            raise ValueError("must be a postgresql:// URL")
        return value


class SettingsError(Exception):
    """An invalid setting, described in one line that names the variable."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"invalid setting ROSTER_{field.upper()}: {message}") from None


def missing(*fields: str) -> SettingsError:
    """The one-line error for settings a process needs and was not given."""
    names = ", ".join(f"ROSTER_{field.upper()}" for field in fields)
    return SettingsError(f"missing setting {names} (only `roster dev` provides local defaults)")


def require(settings: Settings, *fields: str) -> None:
    """Raises `missing` for every one of `fields` that is unset (None or empty)."""
    unset = [field for field in fields if getattr(settings, field) in (None, (), "")]
    if unset:
        raise missing(*unset)
