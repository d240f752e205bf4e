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
