"""Each service's schema, versioned with Alembic: a migration history of its own under
``services/<name>/migrations``, applied by ``incentives migrate --service <name>`` (the
production job), or by the service itself as it starts when ``INCENTIVES_MIGRATE_ON_START``
is on (development's default). A service that does not migrate checks at start that its
database is at the head revision its code expects, and refuses to start otherwise.

Every service's history holds the shared tables (the event log, inbox, broker log,
idempotency keys; the checkpoints of a publishing service) beside its own. The steps that
create them are written once, frozen, in :mod:`shared.schema_history`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import idempotency
from shared.checkpoints import metadata as checkpoint_tables
from shared.eventstore.schema import metadata as log_tables

MIGRATION_LOCK = 0x4D494752
"""The PostgreSQL advisory lock migrations run under: two replicas starting at once, or
a job and a replica, migrate one after the other; the second finds nothing to do."""


SERVICE_TABLES: tuple[sa.MetaData, ...] = (log_tables,)
"""What every service's database holds: the log, the inbox, the broker log, idempotency."""
PROGRAMME_TABLES: tuple[sa.MetaData, ...] = (log_tables, checkpoint_tables)
"""What a programme service's database holds besides its own tables: its checkpoints too."""
assert idempotency.idempotency_keys.metadata is log_tables


class SchemaNotCurrent(RuntimeError):
    """The database is not at the revision the code expects."""


def migrations_of(service: str) -> Path:
    """The migration folder of ``service`` (``services/<service>/migrations``)."""
    spec = importlib.util.find_spec(f"services.{service}")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"there is no service named {service!r}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "migrations"
    if not folder.is_dir():
        raise ValueError(f"the service {service!r} has no migrations folder")
    return folder


def alembic_config(location: Path, connection: sa.Connection | None = None) -> Config:
    """An Alembic configuration of one service's history, without an ini file."""
    config = Config()
    config.set_main_option("script_location", str(location))
    config.attributes["connection"] = connection
    return config


def heads(location: Path) -> set[str]:
    """The head revisions of a history (one, unless two branches were never merged)."""
    return set(ScriptDirectory.from_config(alembic_config(location)).get_heads())


def run_in_context(context: Any, metadata: Iterable[sa.MetaData]) -> None:
    """The body of every service's ``env.py``: run on the connection it was given."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "migrations run on a connection they are given: use `incentives migrate --service`"
        )
    context.configure(
        connection=connection,
        target_metadata=list(metadata),
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _locked(connection: AsyncConnection) -> None:
    if connection.dialect.name == "postgresql":
        await connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))


async def upgrade(engine: AsyncEngine, location: Path, revision: str = "head") -> None:
    """Bring the database to ``revision``, in one transaction, under the migration lock."""
    async with engine.begin() as connection:
        await _locked(connection)
        await connection.run_sync(_refuse_unversioned)
        await connection.run_sync(
            lambda sync: command.upgrade(alembic_config(location, sync), revision)
        )


def _refuse_unversioned(connection: sa.Connection) -> None:
    """A database with tables and no history (made before the schema was versioned, or by
    hand) is not migrated over: the first revision would collide with what is there."""
    if MigrationContext.configure(connection).get_current_heads():
        return
    found = set(sa.inspect(connection).get_table_names()) - {"alembic_version"}
    if found:
        raise SchemaNotCurrent(
            f"the database has tables ({', '.join(sorted(found)[:5])}...) but no migration "
            "history; it was made before schemas were versioned: start from an empty "
            "database (development: remove the service's .db file under var/)"
        )


async def downgrade(engine: AsyncEngine, location: Path, revision: str) -> None:
    """Take the database back to ``revision`` (``base`` empties it), under the lock."""
    async with engine.begin() as connection:
        await _locked(connection)
        await connection.run_sync(
            lambda sync: command.downgrade(alembic_config(location, sync), revision)
        )


async def current(engine: AsyncEngine) -> set[str]:
    """The revisions the database is at (empty before the first migration)."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: set(MigrationContext.configure(sync).get_current_heads())
        )


async def check_current(engine: AsyncEngine, location: Path, service: str) -> None:
    """Raise :class:`SchemaNotCurrent` unless the database is at the code's head."""
    expected, found = heads(location), await current(engine)
    if found != expected:
        raise SchemaNotCurrent(
            f"the {service} database is at {_named(found)}, the code expects "
            f"{_named(expected)}: run `incentives migrate --service {service}` first"
        )


def _named(revisions: Sequence[str] | set[str]) -> str:
    return ", ".join(sorted(revisions)) or "no revision (an empty database)"


async def new_revision(engine: AsyncEngine, location: Path, message: str) -> None:
    """Write the next revision of a history: what the models have that the database at the
    head does not (Alembic's autogenerate; read and edit it before committing)."""
    await upgrade(engine, location)
    config = alembic_config(location)
    number = len(list(ScriptDirectory.from_config(config).walk_revisions())) + 1
    async with engine.begin() as connection:
        config.attributes["connection"] = connection
        await connection.run_sync(
            lambda sync: command.revision(
                alembic_config(location, sync),
                message,
                autogenerate=True,
                rev_id=f"{location.parent.name}_{number:04d}",  # a service's own ids
            )
        )
