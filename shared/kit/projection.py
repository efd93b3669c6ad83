"""The applications read model every programme keeps, in the same transaction as its events.

A programme's table has the columns every service lists and filters by (id, firm,
status, version, the API document, times) plus its own; :func:`applications_table`
builds it. :class:`ApplicationProjection` writes a batch of changed applications in
two statements and serves the API's reads: one document, and pages with cursors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shared import jsontext
from shared.domain import ProcessedState
from shared.eventstore import StreamVersion, UnitOfWork
from shared.eventstore.schema import JSONDocument, UTCDateTime
from shared.kit.cursors import encode_cursor

S = TypeVar("S", bound=ProcessedState)

COMMON_COLUMNS = (
    "id",
    "firm_id",
    "status",
    "version",
    "last_hash",
    "document",
    "created_at",
    "updated_at",
)


def applications_table(
    metadata: sa.MetaData, *columns: sa.Column[Any], indexes: Iterable[sa.Index] = ()
) -> sa.Table:
    """The ``applications`` table: the common columns, then a programme's own ``columns``."""
    return sa.Table(
        "applications",
        metadata,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("firm_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("document", JSONDocument, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        *columns,
        sa.Index("ix_applications_created", "created_at", "id"),
        sa.Index("ix_applications_status", "status", "created_at", "id"),
        sa.Index("ix_applications_firm", "firm_id", "created_at", "id"),
        *indexes,
    )


def iso(moment: datetime) -> str:
    """A time as the API shows it: ISO 8601, UTC, ``Z``."""
    return moment.isoformat().replace("+00:00", "Z")


def _bind_types(table: sa.Table, names: Sequence[str]) -> list[sa.BindParameter[Any]]:
    """Typed binds where the driver needs them (times, dates); the rest go as they are."""
    binds = []
    for name in names:
        column_type = table.c[name].type
        if isinstance(column_type, UTCDateTime | sa.Date):
            binds.append(sa.bindparam(name, type_=column_type))
    return binds


class ApplicationProjection(Generic[S]):
    """One programme's applications table, kept by the kit.

    The API shows an application as its :meth:`resource`: what every application has
    (id, status, firm, version, times) around what ``describe(state)`` says of it, the
    programme's own part. That document is also the row's; a programme's own columns
    are read from it: the member of the column's name, or the path ``paths`` gives
    (``{"voucher_id": ("voucher", "id")}``).
    """

    def __init__(
        self,
        table: sa.Table,
        describe: Callable[[S], dict[str, Any]],
        paths: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.table = table
        self.describe = describe
        own = [c for c in table.columns if c.name not in COMMON_COLUMNS]
        self._own = [(c.name, (paths or {}).get(c.name, (c.name,)), c.type) for c in own]
        names = list(COMMON_COLUMNS) + [
            c.name for c in table.columns if c.name not in COMMON_COLUMNS
        ]
        binds = _bind_types(table, names)
        self._insert = sa.text(
            f"INSERT INTO {table.name} ({', '.join(names)})"
            f" VALUES ({', '.join(':' + n for n in names)})"
        ).bindparams(*binds)
        updated = [n for n in names if n not in ("id", "created_at")]
        self._update = sa.text(
            f"UPDATE {table.name} SET {', '.join(f'{n} = :{n}' for n in updated)} WHERE id = :id"
        ).bindparams(*[b for b in binds if b.key != "created_at"])
        self._lock = sa.text(
            f"SELECT id, version, last_hash FROM {table.name}"
            " WHERE id = ANY(CAST(:ids AS TEXT[])) ORDER BY id FOR UPDATE"
        )
        self._saved: dict[str, tuple[S, dict[str, Any]]] = {}
        """The documents of the last :meth:`save`, with the very states they show: the
        answers to the commands saved are those documents, not built a second time."""

    def resource(self, state: S) -> dict[str, Any]:
        """The application as the API shows it (the same dict for the state just saved:
        read it, never change it)."""
        saved = self._saved.get(state.id)
        if saved is not None and saved[0] is state:  # this object, not an equal one
            return saved[1]
        return self._resource(state)

    def _resource(self, state: S) -> dict[str, Any]:
        return {
            "id": state.id,
            "status": str(state.status),
            "firm_id": state.firm_id,
            **self.describe(state),
            "version": state.version,
            "created_at": iso(state.created_at),
            "updated_at": iso(state.updated_at),
        }

    def _row(self, state: S, document: dict[str, Any]) -> dict[str, Any]:
        row = {
            "id": state.id,
            "firm_id": state.firm_id,
            "status": str(state.status),
            "version": state.version,
            "last_hash": state.last_hash,
            "document": jsontext.dumps(document),
            "created_at": state.created_at,
            "updated_at": state.updated_at,
        }
        for name, path, column_type in self._own:
            row[name] = _column_value(document, path, column_type)
        return row

    async def save(self, uow: UnitOfWork, states: Sequence[S], new: set[str]) -> None:
        """Insert the rows of the applications in ``new``, update the others: two round trips at most."""
        documents = [self._resource(state) for state in states]
        rows = [self._row(s, d) for s, d in zip(states, documents, strict=True)]
        # a state's document is a function of the state alone: kept whether or not this
        # transaction commits, and found again only for the same state object
        self._saved = {s.id: (s, d) for s, d in zip(states, documents, strict=True)}
        await uow.write_many(self._insert, [r for r in rows if r["id"] in new])
        await uow.write_many(self._update, [r for r in rows if r["id"] not in new])

    async def lock(
        self, uow: UnitOfWork, application_ids: Sequence[str]
    ) -> dict[str, StreamVersion]:
        """Hold the applications' rows until the transaction ends, taken in id order so that
        two transactions locking overlapping sets cannot deadlock (PostgreSQL; SQLite
        writers queue for the whole database anyway). Returns where each application's
        chain stands (its row is written with its events); an id missing from the answer
        names no application (none, or another aggregate's, such as a provider's)."""
        if not application_ids:
            return {}
        if uow.connection.dialect.name == "postgresql":
            rows = await uow.fetch_all(self._lock, {"ids": list(application_ids)})
        else:
            t = self.table.c
            result = await uow.connection.execute(
                sa.select(t.id, t.version, t.last_hash).where(t.id.in_(list(application_ids)))
            )
            rows = [dict(row._mapping) for row in result]
        return {row["id"]: StreamVersion(row["version"], row["last_hash"]) for row in rows}

    async def document(
        self, connection: AsyncConnection, application_id: str
    ) -> dict[str, Any] | None:
        table = self.table
        row = (
            await connection.execute(
                sa.select(table.c.document).where(table.c.id == application_id)
            )
        ).first()
        return None if row is None else _document(row.document)

    async def page(
        self,
        connection: AsyncConnection,
        *,
        firm_id: str | None,
        status: str | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Documents oldest first, ``limit`` of them after the cursor, and the next cursor."""
        table = self.table
        query = sa.select(table.c.document, table.c.created_at, table.c.id)
        if firm_id is not None:
            query = query.where(table.c.firm_id == firm_id)
        if status is not None:
            query = query.where(table.c.status == status)
        if after is not None:
            query = query.where(sa.tuple_(table.c.created_at, table.c.id) > sa.tuple_(*after))
        rows = (
            await connection.execute(
                query.order_by(table.c.created_at, table.c.id).limit(limit + 1)
            )
        ).all()
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return [_document(r.document) for r in page], next_cursor


def _column_value(document: Mapping[str, Any], path: tuple[str, ...], column_type: Any) -> Any:
    """The value at ``path`` in the document (None where a part is missing), as the column
    takes it: a date column gets a date, not the document's ISO text."""
    value: Any = document
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str) and isinstance(column_type, sa.Date):
        return date.fromisoformat(value)
    return value


def _document(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)
