"""The readiness rule on the database schema: at the code's migration head, or why not."""

from __future__ import annotations

from service.db.migrate import code_revisions, schema_problem

KNOWN = {"0001", "0002", "0003"}


def test_at_the_head_is_ready() -> None:
    assert schema_problem(["0003"], {"0003"}, KNOWN) is None


def test_no_migrations_applied() -> None:
    empty: tuple[list[str] | None, ...] = (None, [])
    for applied in empty:
        assert schema_problem(applied, {"0003"}, KNOWN) == (
            "no migrations applied (run `roster migrate`)"
        )


def test_behind_names_both_revisions() -> None:
    problem = schema_problem(["0002"], {"0003"}, KNOWN)
    assert problem == "at revision 0002, the code's head is 0003 (run `roster migrate`)"


def test_ahead_of_the_code_is_ready() -> None:
    """Migrated by newer code (a rolling deploy's migrate Job ran): the old pods keep serving."""
    assert schema_problem(["0004"], {"0003"}, KNOWN) is None


def test_the_code_has_one_head_among_its_revisions() -> None:
    heads, known = code_revisions()
    assert len(heads) == 1 and heads <= known and "0001" in known
