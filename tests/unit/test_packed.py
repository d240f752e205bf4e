"""Packing text columns into one parameter (the database side is covered by every batch write
in the integration tests, and by `test_packed_values_round_trip` there)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.db.packed import NULL, SEPARATOR, pack


def _unpack(packed: str) -> list[str | None]:
    """What PostgreSQL's string_to_array(packed, chr(31), chr(30)) gives back."""
    return [None if part == NULL else part for part in packed.split(SEPARATOR)]


@given(st.lists(st.one_of(st.none(), st.text()), min_size=1))
def test_packed_values_come_back_or_pack_declines(values: list[str | None]) -> None:
    packed = pack(values)
    if packed is not None:
        assert _unpack(packed) == values


def test_pack_declines_what_it_cannot_carry() -> None:
    assert pack([]) is None
    assert pack([""]) is None  # one empty string would read back as no value at all
    assert pack([f"a{SEPARATOR}b"]) is None
    assert pack(["a", NULL]) is None
    assert pack(["a", None, ""]) == f"a{SEPARATOR}{NULL}{SEPARATOR}"
    assert pack([f"x{NULL}"]) == f"x{NULL}"  # only a value equal to the marker is NULL
