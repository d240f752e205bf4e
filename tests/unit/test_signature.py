from __future__ import annotations

import pytest

from service.webhooks.signature import SignatureError, sign, verify

KEY, OTHER = b"k" * 32, b"o" * 32
BODY = b'{"id": "x"}'
NOW = 1_800_000_000


def _headers(key: bytes = KEY, ts: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(key, "msg_1", ts, body),
    }


def test_good_signature() -> None:
    assert verify(_headers(), BODY, [KEY], now=NOW).webhook_id == "msg_1"


def test_any_configured_key_and_any_listed_signature() -> None:
    headers = _headers(OTHER)
    headers["webhook-signature"] = "v1,!!notbase64 v2,abc " + headers["webhook-signature"]
    assert verify(headers, BODY, [KEY, OTHER], now=NOW).timestamp == NOW


@pytest.mark.parametrize(("offset", "ok"), [(-300, True), (300, True), (-301, False), (301, False)])
def test_tolerance_both_ways(offset: int, ok: bool) -> None:
    headers = _headers(ts=NOW + offset)
    if ok:
        verify(headers, BODY, [KEY], now=NOW)
    else:
        with pytest.raises(SignatureError, match="tolerance"):
            verify(headers, BODY, [KEY], now=NOW)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"webhook-id": ""}, "missing webhook-id"),
        ({"webhook-timestamp": ""}, "missing webhook-timestamp"),
        ({"webhook-signature": ""}, "missing webhook-signature"),
        ({"webhook-timestamp": "soon"}, "not a Unix time"),
        ({"webhook-signature": "v2,AAAA"}, "no v1 signature"),
        ({"webhook-id": "msg_2"}, "no valid signature"),
    ],
)
def test_refusals_say_why(change: dict[str, str], message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        verify(_headers() | change, BODY, [KEY], now=NOW)


def test_body_must_match_exactly() -> None:
    with pytest.raises(SignatureError):
        verify(_headers(), BODY + b" ", [KEY], now=NOW)
    with pytest.raises(SignatureError):
        verify(_headers(), BODY, [OTHER], now=NOW)
