"""The answer to a command is the document its application's row was saved with, built once."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from shared.kit.projection import ApplicationProjection, applications_table

AT = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class State:
    id: str
    firm_id: str
    status: str
    version: int
    last_hash: str
    created_at: datetime
    updated_at: datetime
    amount: int


class Writes:
    """A unit of work that keeps what it is asked to write."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    async def write_many(self, statement: Any, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)


def projection(built: list[str]) -> ApplicationProjection[Any]:
    def describe(state: State) -> dict[str, Any]:
        built.append(state.id)
        return {"amount": state.amount}

    table = applications_table(sa.MetaData(), sa.Column("amount", sa.BigInteger))
    return ApplicationProjection(table, describe)


async def test_the_saved_state_is_answered_with_its_saved_document() -> None:
    built: list[str] = []
    applications = projection(built)
    state = State("app_1", "123-45-67890", "submitted", 1, "a" * 64, AT, AT, 8_000_000)
    writes = Writes()
    await applications.save(writes, [state], new={"app_1"})  # type: ignore[arg-type]

    answer = applications.resource(state)
    assert built == ["app_1"]  # described once, for the row and the answer
    assert json.loads(writes.rows[0]["document"]) == answer
    assert answer["amount"] == writes.rows[0]["amount"] == 8_000_000


async def test_another_state_of_the_same_application_is_described_afresh() -> None:
    built: list[str] = []
    applications = projection(built)
    state = State("app_1", "123-45-67890", "submitted", 1, "a" * 64, AT, AT, 8_000_000)
    await applications.save(Writes(), [state], new={"app_1"})  # type: ignore[arg-type]

    later = replace(state, status="verified", version=2, amount=9_000_000)
    assert applications.resource(later)["amount"] == 9_000_000
    equal = replace(state)  # equal, but not the state that was saved
    assert applications.resource(equal) == applications.resource(state)
    assert built == ["app_1", "app_1", "app_1"]
