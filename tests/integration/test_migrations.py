"""Each service's schema history: every revision goes up, down and up again; the head is
exactly what the models say; replicas migrating at once migrate once; and a production
service on a database that is not at the head refuses to start."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from typer.testing import CliRunner

from services.fund.adapters.tables import metadata as fund_tables
from services.oversight.adapters.tables import metadata as oversight_tables
from services.taxcredit.adapters.tables import metadata as taxcredit_tables
from services.voucher.adapters.tables import metadata as voucher_tables
from services.voucher.main import create_app
from shared.cli import app as cli
from shared.eventstore import create_engine
from shared.migrations import (
    PROGRAMME_TABLES,
    SERVICE_TABLES,
    SchemaNotCurrent,
    alembic_config,
    check_current,
    current,
    downgrade,
    heads,
    migrations_of,
    upgrade,
)
from shared.settings import ServiceSettings

MODELS: dict[str, list[sa.MetaData]] = {
    "voucher": [*PROGRAMME_TABLES, voucher_tables],
    "taxcredit": [*PROGRAMME_TABLES, taxcredit_tables],
    "fund": [*PROGRAMME_TABLES, fund_tables],
    "oversight": [*SERVICE_TABLES, oversight_tables],
}


def revisions(service: str) -> list[tuple[str, str]]:
    """Each revision with the one before it (``base`` for the first), oldest first."""
    script = ScriptDirectory.from_config(alembic_config(migrations_of(service)))
    walked = list(script.walk_revisions("base", "heads"))
    return [(r.revision, str(r.down_revision or "base")) for r in reversed(walked)]


async def tables_of(engine: Any) -> set[str]:
    async with engine.connect() as connection:
        return await connection.run_sync(lambda c: set(sa.inspect(c).get_table_names()))


async def differences(engine: Any, models: list[sa.MetaData]) -> list[Any]:
    """What Alembic's autogenerate would write: the models against the database."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"compare_type": True}), models
            )
        )


@pytest.mark.parametrize("service", sorted(MODELS))
async def test_every_revision_goes_up_down_and_up_again(
    service: str, postgres_databases: Callable[[], Awaitable[str]]
) -> None:
    """The stairway, on PostgreSQL: a downgrade that forgets a table, an index or a row
    fails here, because the upgrade after it would collide with what was left."""
    engine = create_engine(await postgres_databases())
    location = migrations_of(service)
    steps = revisions(service)
    assert steps, f"{service} has no revisions"
    try:
        for revision, before in steps:
            await upgrade(engine, location, revision)
            assert await current(engine) == {revision}
            await downgrade(engine, location, before)
            assert await current(engine) == (set() if before == "base" else {before})
            await upgrade(engine, location, revision)
        await downgrade(engine, location, "base")
        assert await tables_of(engine) == {"alembic_version"}
        await upgrade(engine, location)
        assert await current(engine) == heads(location)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("service", sorted(MODELS))
async def test_the_head_is_what_the_models_say(service: str, database_url: str) -> None:
    """Autogenerate finds nothing to add, drop or alter, on either backend: a model changed
    without its migration fails here."""
    engine = create_engine(database_url)
    try:
        await upgrade(engine, migrations_of(service))
        assert await differences(engine, MODELS[service]) == []
        expected = {t for m in MODELS[service] for t in m.tables} | {"alembic_version"}
        assert await tables_of(engine) == expected
    finally:
        await engine.dispose()


async def test_a_model_changed_without_a_migration_is_found(database_url: str) -> None:
    """The check above can fail: a column the models have and no migration made is named."""
    engine = create_engine(database_url)
    extra = sa.MetaData()
    sa.Table("providers_notes", extra, sa.Column("id", sa.String(64), primary_key=True))
    try:
        await upgrade(engine, migrations_of("voucher"))
        found = await differences(engine, [*MODELS["voucher"], extra])
        assert [d[0] for d in found] == ["add_table"]
        assert found[0][1].name == "providers_notes"
    finally:
        await engine.dispose()


async def test_replicas_migrating_at_once_migrate_once(
    postgres_databases: Callable[[], Awaitable[str]],
) -> None:
    """Four processes' worth of engines upgrade one empty database together: the lock
    makes them take turns, the first creates everything, the others find the head."""
    url = await postgres_databases()
    engines = [create_engine(url) for _ in range(4)]
    location = migrations_of("taxcredit")
    try:
        await asyncio.gather(*(upgrade(e, location) for e in engines))
        assert await current(engines[0]) == heads(location)
        async with engines[0].connect() as connection:
            rows = (await connection.execute(sa.text("SELECT count(*) FROM broker_log"))).scalar()
        assert rows == 1
    finally:
        for engine in engines:
            await engine.dispose()


def production(url: str, tmp_path: Path, **more: Any) -> ServiceSettings:
    return ServiceSettings(
        environment="production",
        service="voucher",
        state_dir=tmp_path,
        database_url=url,
        jwt_secret="s" * 40,
        checkpoint_signing_key=base64.b64encode(b"k" * 32).decode(),
        broker_startup_wait_seconds=0,
        **more,
    )


async def test_a_production_service_on_an_unmigrated_database_refuses_to_start(
    postgres_databases: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    """In production the job migrates; a service finding an older schema stops at once,
    naming the command, and has created nothing."""
    url = await postgres_databases()
    app = create_app(production(url, tmp_path))
    with pytest.raises(SchemaNotCurrent, match=r"incentives migrate --service voucher"):
        async with app.router.lifespan_context(app):
            pass
    engine = create_engine(url)
    try:
        assert await tables_of(engine) == set()
    finally:
        await engine.dispose()


def test_the_migration_job_brings_a_database_to_the_head_and_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``incentives migrate``, as the production job runs it, and down to empty."""
    monkeypatch.setenv("INCENTIVES_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/fund.db")
    runner = CliRunner()
    up = runner.invoke(cli, ["migrate", "--service", "fund"])
    assert up.exit_code == 0, up.output
    head = ", ".join(sorted(heads(migrations_of("fund"))))
    assert f"fund: the schema is at {head}" in up.output
    again = runner.invoke(cli, ["migrate", "--service", "fund"])
    assert again.exit_code == 0 and f"at {head}" in again.output
    down = runner.invoke(cli, ["migrate", "--service", "fund", "--down", "--to", "base"])
    assert down.exit_code == 0 and "no revision (empty)" in down.output
    unknown = runner.invoke(cli, ["migrate", "--service", "payroll"])
    assert unknown.exit_code == 2 and "--service" in unknown.output


async def test_a_database_made_before_migrations_is_refused_not_migrated_over(
    tmp_path: Path,
) -> None:
    """An old ``var/voucher.db`` (tables, no history) gets a message saying what to do."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/old.db")
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("CREATE TABLE events (position INTEGER)"))
        with pytest.raises(SchemaNotCurrent, match=r"no migration history.*remove"):
            await upgrade(engine, migrations_of("voucher"))
        assert await tables_of(engine) == {"events"}
    finally:
        await engine.dispose()


async def test_a_database_of_another_service_is_not_at_this_ones_head(tmp_path: Path) -> None:
    """Revision ids are the service's own: voucher's check refuses fund's database (with
    shared ids it would pass, and fail later on a missing table)."""
    for service in MODELS:
        assert all(revision.startswith(f"{service}_") for revision, _ in revisions(service))
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/fund.db")
    try:
        await upgrade(engine, migrations_of("fund"))
        with pytest.raises(SchemaNotCurrent, match="the voucher database is at fund_0002"):
            await check_current(engine, migrations_of("voucher"), "voucher")
        await check_current(engine, migrations_of("fund"), "fund")
    finally:
        await engine.dispose()
