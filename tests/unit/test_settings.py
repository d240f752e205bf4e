from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from service.paths import project_root
from service.settings import SettingsError, decode_webhook_secret, load_settings

GOOD = "whsec_" + base64.b64encode(b"k" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"o" * 24).decode()


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ROSTER_DATABASE_URL",
        "ROSTER_KAFKA_BOOTSTRAP_SERVERS",
        "ROSTER_WEBHOOK_SECRETS",
        "ROSTER_ADMIN_TOKEN",
        "ROSTER_HTTP_PORT",
        "ROSTER_LOCAL_KAFKA_PORT",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.http_host == "127.0.0.1"
    assert settings.http_port == 8000
    assert settings.local_kafka_port == 9092
    assert settings.webhook_secrets == ()
    assert settings.database_url is None


def test_secrets_are_space_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROSTER_WEBHOOK_SECRETS", f"  {GOOD}   {OTHER} ")
    secrets = [s.get_secret_value() for s in load_settings().webhook_secrets]
    assert secrets == [GOOD, OTHER]


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("ROSTER_HTTP_PORT", "abc", "ROSTER_HTTP_PORT"),
        ("ROSTER_HTTP_PORT", "70000", "ROSTER_HTTP_PORT"),
        ("ROSTER_WEBHOOK_SECRETS", "nope", "must start with 'whsec_'"),
        (
            "ROSTER_WEBHOOK_SECRETS",
            "whsec_" + base64.b64encode(b"short").decode(),
            "24 to 64 bytes",
        ),
        ("ROSTER_WEBHOOK_SECRETS", "whsec_!!!notbase64", "base64"),
        ("ROSTER_ADMIN_TOKEN", "short", "at least 16"),
        ("ROSTER_DATABASE_URL", "mysql://x", "postgresql://"),
    ],
)
def test_invalid_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert name in message and fragment in message
    assert "\n" not in message
    if "SECRET" in name:
        assert value not in message  # a secret is never echoed back


def test_decode_webhook_secret() -> None:
    assert decode_webhook_secret(GOOD) == b"k" * 32


def test_cli_fails_fast_with_one_line() -> None:
    env = {"ROSTER_HTTP_PORT": "not-a-port", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "service", "api"],
        env=env,
        capture_output=True,
        text=True,
        cwd=project_root(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("roster: invalid setting ROSTER_HTTP_PORT")


def test_clever_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ROSTER_CLEVER_API_URL",
        "ROSTER_CLEVER_OAUTH_URL",
        "ROSTER_CLEVER_CLIENT_ID",
        "ROSTER_CLEVER_CLIENT_SECRET",
        "ROSTER_CLEVER_DISTRICT_TOKENS",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.clever_api_url == "https://api.clever.com"
    assert settings.clever_oauth_url == "https://clever.com"
    assert settings.clever_client_id is None and settings.clever_client_secret is None
    assert settings.clever_district_tokens == ()
    assert settings.poll_interval_seconds == 30
    assert settings.backfill_max_archive_share == 0.05
    assert settings.clever_page_limit == 1000
    assert settings.clever_requests_per_minute == 1100
    assert settings.clever_timeout_seconds == 30
    assert settings.poller_metrics_port == 9103
    assert settings.poll_lease_seconds == 15
    assert settings.poll_max_concurrent_districts == 8


def test_district_tokens_are_parsed_and_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROSTER_CLEVER_DISTRICT_TOKENS", "  d1:tok-one\td2:tok:two ")
    settings = load_settings()
    pairs = [(d, t.get_secret_value()) for d, t in settings.clever_district_tokens]
    assert pairs == [("d1", "tok-one"), ("d2", "tok:two")]
    assert "tok-one" not in repr(settings) and "tok-one" not in str(settings)


def test_clever_urls_lose_a_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROSTER_CLEVER_API_URL", "http://127.0.0.1:9000/")
    assert load_settings().clever_api_url == "http://127.0.0.1:9000"


def test_client_credentials_come_as_a_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROSTER_CLEVER_CLIENT_ID", "app")
    monkeypatch.setenv("ROSTER_CLEVER_CLIENT_SECRET", "s3cret-value")
    settings = load_settings()
    assert settings.clever_client_id == "app"
    assert settings.clever_client_secret is not None
    assert settings.clever_client_secret.get_secret_value() == "s3cret-value"


@pytest.mark.parametrize(
    ("env", "name", "fragment", "hidden"),
    [
        (
            {"ROSTER_CLEVER_DISTRICT_TOKENS": "d1:first-ok-tok bare-token-123"},
            "ROSTER_CLEVER_DISTRICT_TOKENS",
            "entry 2 is not '<district id>:<token>'",
            ["bare-token-123", "first-ok-tok"],
        ),
        (
            {"ROSTER_CLEVER_DISTRICT_TOKENS": ":lonely-token-456"},
            "ROSTER_CLEVER_DISTRICT_TOKENS",
            "entry 1",
            ["lonely-token-456"],
        ),
        ({"ROSTER_CLEVER_DISTRICT_TOKENS": "d1:"}, "ROSTER_CLEVER_DISTRICT_TOKENS", "entry 1", []),
        (
            {"ROSTER_CLEVER_DISTRICT_TOKENS": "d1:first-tok d1:second-tok"},
            "ROSTER_CLEVER_DISTRICT_TOKENS",
            "repeats a district id",
            ["first-tok", "second-tok"],
        ),
        ({"ROSTER_CLEVER_CLIENT_ID": "app"}, "ROSTER_CLEVER_CLIENT_SECRET", "set together", []),
        (
            {"ROSTER_CLEVER_CLIENT_SECRET": "lone-secret-789"},
            "ROSTER_CLEVER_CLIENT_SECRET",
            "set together",
            ["lone-secret-789"],
        ),
        ({"ROSTER_CLEVER_API_URL": "api.clever.com"}, "ROSTER_CLEVER_API_URL", "http", []),
        ({"ROSTER_CLEVER_OAUTH_URL": "https://"}, "ROSTER_CLEVER_OAUTH_URL", "http", []),
        ({"ROSTER_POLL_INTERVAL_SECONDS": "0"}, "ROSTER_POLL_INTERVAL_SECONDS", "greater", []),
        (
            {"ROSTER_BACKFILL_MAX_ARCHIVE_SHARE": "1.5"},
            "ROSTER_BACKFILL_MAX_ARCHIVE_SHARE",
            "1",
            [],
        ),
        ({"ROSTER_CLEVER_PAGE_LIMIT": "10001"}, "ROSTER_CLEVER_PAGE_LIMIT", "10000", []),
        ({"ROSTER_CLEVER_PAGE_LIMIT": "0"}, "ROSTER_CLEVER_PAGE_LIMIT", "1", []),
        (
            {"ROSTER_CLEVER_REQUESTS_PER_MINUTE": "1201"},
            "ROSTER_CLEVER_REQUESTS_PER_MINUTE",
            "1200",
            [],
        ),
        ({"ROSTER_CLEVER_TIMEOUT_SECONDS": "-1"}, "ROSTER_CLEVER_TIMEOUT_SECONDS", "greater", []),
        ({"ROSTER_POLLER_METRICS_PORT": "70000"}, "ROSTER_POLLER_METRICS_PORT", "65535", []),
        ({"ROSTER_POLL_LEASE_SECONDS": "0.5"}, "ROSTER_POLL_LEASE_SECONDS", "1", []),
        (
            {"ROSTER_POLL_MAX_CONCURRENT_DISTRICTS": "0"},
            "ROSTER_POLL_MAX_CONCURRENT_DISTRICTS",
            "1",
            [],
        ),
    ],
)
def test_invalid_pull_setting_is_one_line_and_hides_tokens(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    name: str,
    fragment: str,
    hidden: list[str],
) -> None:
    for key in ("ROSTER_CLEVER_CLIENT_ID", "ROSTER_CLEVER_CLIENT_SECRET"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"invalid setting {name}: ") and fragment in message, message
    assert "\n" not in message
    for secret in hidden:
        assert secret not in message
