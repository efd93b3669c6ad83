"""The store compiles each text statement once, and never hands one statement's SQL to another."""

from __future__ import annotations

import gc

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from shared.eventstore.store import _compiled


def test_a_statement_made_where_a_collected_one_lived_gets_its_own_sql() -> None:
    dialect = postgresql.asyncpg.dialect()  # type: ignore[attr-defined]
    seen_ids: set[int] = set()
    reused = 0
    for n in range(2000):
        statement = sa.text(f"SELECT :value + {n}")
        if id(statement) in seen_ids:
            reused += 1  # CPython hands a freed statement's memory (and id) to the next one
        seen_ids.add(id(statement))
        sql, names = _compiled(statement, dialect)
        assert sql == f"SELECT $1 + {n}"
        assert names == ("value",)
        del statement
        gc.collect(0)
    assert reused, "no id was reused: this run could not tell a stable key from id()"


def test_the_same_statement_is_compiled_once() -> None:
    dialect = postgresql.asyncpg.dialect()  # type: ignore[attr-defined]
    statement = sa.text("SELECT :a, :b")
    first = _compiled(statement, dialect)
    assert _compiled(statement, dialect) is first
