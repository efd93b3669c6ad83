"""The ``incentives`` command: the embedded stack, dev tokens, topics and recovery."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from shared.audit_cli import audit
from shared.auth import AUDIENCES, HS256Verifier
from shared.broker import BrokerError, EmbeddedBroker, port_open, wait_for_broker
from shared.contracts import Role
from shared.dlq import list_letters, redrive
from shared.processes import (
    ServiceExited,
    ServiceNotReady,
    ServiceRun,
    start_service,
    wait_until_up,
)
from shared.security import create_service_engine, kafka_client_options
from shared.settings import ServiceSettings
from shared.topics import DLQ_TOPIC, ensure_topics, standard_topics

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(audit, name="audit", help="An auditor's checks, from the topics alone.")

SERVICES: dict[str, int] = {"oversight": 8000, "voucher": 8001, "taxcredit": 8002, "fund": 8003}
"""Each service's module under ``services`` and its port on the embedded stack."""


@app.command()
def broker(
    host: str = "127.0.0.1",
    port: int = 9092,
) -> None:
    """Run the embedded Tansu broker in the foreground (memory only) until interrupted."""
    embedded = EmbeddedBroker(host, port)
    embedded.start()
    typer.echo(f"broker listening on {embedded.bootstrap_servers} (memory storage; Ctrl-C stops)")
    asyncio.run(ensure_topics(embedded.bootstrap_servers, standard_topics()))
    try:
        _wait_for_signal()
    finally:
        embedded.stop()
        typer.echo("broker stopped")


@app.command()
def token(
    role: Annotated[Role, typer.Option(help="firm, provider, officer, ministry or auditor")],
    sub: Annotated[str, typer.Option(help="who the token speaks for")],
    firm_id: Annotated[str | None, typer.Option(help="the firm's business number")] = None,
    provider_id: Annotated[str | None, typer.Option(help="the provider's id")] = None,
    hours: int = 12,
    service: Annotated[
        list[str] | None,
        typer.Option(help="a service the token is for (its aud; repeat it); default: all"),
    ] = None,
) -> None:
    """Print a bearer token that the stack started by `make run` accepts."""
    from datetime import timedelta

    settings = ServiceSettings()
    verifier = HS256Verifier(settings.resolved_jwt_secret())
    try:
        typer.echo(
            verifier.issue(
                sub=sub,
                role=role,
                firm_id=firm_id,
                provider_id=provider_id,
                ttl=timedelta(hours=hours),
                audience=service or AUDIENCES,
            )
        )
    except ValidationError as error:
        raise typer.BadParameter("; ".join(e["msg"] for e in error.errors())) from error


@app.command()
def topics() -> None:
    """Create the topics of the design on the configured broker, if missing."""
    settings = ServiceSettings()
    created = asyncio.run(
        ensure_topics(
            settings.kafka_bootstrap_servers,
            standard_topics(settings.topic_partitions, prefix=settings.topic_prefix),
            kafka_client_options(settings),
        )
    )
    typer.echo("created: " + (", ".join(created) if created else "nothing (all there)"))


@app.command()
def republish(
    service: Annotated[str, typer.Option(help="voucher, taxcredit or fund")],
) -> None:
    """Queue a service's whole log to be published again (after the broker lost its data).

    The service's running relay sends it, in order; consumers drop what they already had.
    """
    from shared.clock import SystemClock
    from shared.eventstore import EventStore

    settings = ServiceSettings(service=service)

    async def queue_again() -> int:
        engine = create_service_engine(settings)
        try:
            return await EventStore(engine, SystemClock()).mark_all_unpublished()
        finally:
            await engine.dispose()

    count = asyncio.run(queue_again())
    typer.echo(f"{service}: {count} events queued for publishing again")


@app.command()
def migrate(
    service: Annotated[str, typer.Option(help="oversight, voucher, taxcredit or fund")],
    to: Annotated[str, typer.Option(help="a revision; `head` is the newest")] = "head",
    down: Annotated[bool, typer.Option(help="go back to --to instead (`base`: empty)")] = False,
    new_revision: Annotated[
        str | None,
        typer.Option(help="write the next revision instead: what the models add (autogenerate)"),
    ] = None,
) -> None:
    """Bring a service's database schema to a revision (the production migration job).

    It reads INCENTIVES_DATABASE_URL (development: the service's SQLite file) and runs
    under a lock, so replicas and jobs starting together migrate once. ``--new-revision``
    is for developers: it writes the next file of ``services/<service>/migrations``.
    """
    from shared import migrations

    if service not in SERVICES:
        raise typer.BadParameter(f"one of {', '.join(SERVICES)}", param_hint="--service")
    settings = ServiceSettings(service=service)
    location = migrations.migrations_of(service)

    async def run() -> set[str]:
        engine = create_service_engine(settings, pool_size=1)
        try:
            if new_revision is not None:
                await migrations.new_revision(engine, location, new_revision)
            elif down:
                await migrations.downgrade(engine, location, to)
            else:
                await migrations.upgrade(engine, location, to)
            return await migrations.current(engine)
        finally:
            await engine.dispose()

    at = asyncio.run(run())
    typer.echo(f"{service}: the schema is at {', '.join(sorted(at)) or 'no revision (empty)'}")


@app.command("restore-check")
def restore_check(
    service: Annotated[str, typer.Option(help="voucher, taxcredit or fund")],
) -> None:
    """After a service's database was restored from a backup, and before the service starts
    on it: compare its log with its events topic. Exit 0: it may start (the relay sends
    what the topic lacks); 1: the restore lost events the topic holds, or the logs forked.
    """
    from shared.audit_cli import LogReader
    from shared.restore import check_restore

    if service not in SERVICES or service == "oversight":
        raise typer.BadParameter("voucher, taxcredit or fund", param_hint="--service")
    settings = ServiceSettings(service=service)
    reader = LogReader(
        settings.kafka_bootstrap_servers,
        settings.topic_prefix,
        slim=True,
        kafka_options=kafka_client_options(settings),
        checkpoints=False,
    )
    on_topic = reader.read(service).events

    async def compare() -> Any:
        engine = create_service_engine(settings, pool_size=1)
        try:
            return await check_restore(engine, service, on_topic)
        finally:
            await engine.dispose()

    found = asyncio.run(compare())
    typer.echo(found.describe())
    raise typer.Exit(0 if found.safe_to_start else 1)


dlq = typer.Typer(no_args_is_help=True, add_completion=False)
app.add_typer(dlq, name="dlq", help="The dead letters: what the consumers gave up on, and why.")


def _dlq_topic() -> tuple[str, str, dict[str, Any]]:
    settings = ServiceSettings()
    return (
        settings.kafka_bootstrap_servers,
        settings.topic_prefix + DLQ_TOPIC,
        kafka_client_options(settings),
    )


@dlq.command("list")
def dlq_list(
    consumer: Annotated[str | None, typer.Option(help="only this consumer's letters")] = None,
) -> None:
    """Every dead letter, oldest first: which consumer gave up on what, and why."""
    bootstrap, topic, options = _dlq_topic()
    letters = asyncio.run(list_letters(bootstrap, topic, options))
    shown = [x for x in letters if consumer is None or x.consumer == consumer]
    for x in shown:
        where = f"{x.source_topic}[{x.source_partition}]@{x.source_offset}"
        typer.echo(
            f"{x.offset:>6}  {x.consumer}  {x.kind}  {where}  "
            f"{x.event_id or '-'}  {x.reason.splitlines()[0] if x.reason else ''}"
        )
    typer.echo(f"{len(shown)} dead letter(s) on {topic}")


@dlq.command("redrive")
def dlq_redrive(
    consumer: Annotated[str | None, typer.Option(help="only this consumer's letters")] = None,
) -> None:
    """Send the dead letters not re-driven before back to their topics, once each: the
    consumer that gave up applies them, the others pass over them (their inbox has them)."""
    bootstrap, topic, options = _dlq_topic()
    sent = asyncio.run(redrive(bootstrap, topic, consumer=consumer, client_options=options))
    typer.echo(f"{len(sent)} dead letter(s) re-driven from {topic}")


@app.command()
def run(
    broker_port: int = 9092,
    host: str = "127.0.0.1",
    port_offset: Annotated[int, typer.Option(help="added to every service port")] = 0,
) -> None:
    """Start the embedded broker and every service on SQLite, print their URLs, run until Ctrl-C."""
    settings = ServiceSettings()
    state = settings.state_dir.resolve()
    (state / "logs").mkdir(parents=True, exist_ok=True)
    settings.resolved_jwt_secret()  # create the dev secrets before services race for them
    settings.signing_seed()  # the checkpoint-signing key, var/checkpoint-signing-key

    embedded: EmbeddedBroker | None = None
    bootstrap = f"{host}:{broker_port}"
    if port_open(host, broker_port):
        typer.echo(f"using the broker already on {bootstrap}")
    else:
        embedded = EmbeddedBroker(host, broker_port, log_path=state / "logs" / "broker.log")
        embedded.start()
        typer.echo(f"broker      {bootstrap} (embedded Tansu, memory only)")
    asyncio.run(wait_for_broker(bootstrap))
    asyncio.run(ensure_topics(bootstrap, standard_topics(settings.topic_partitions)))

    ports = {service: port + port_offset for service, port in SERVICES.items()}
    services: list[ServiceRun] = []
    processes: dict[str, subprocess.Popen[bytes]] = {}
    environment = {"INCENTIVES_KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    try:
        for service, port in ports.items():
            started = start_service(
                service,
                port,
                environment=environment,
                log_dir=state / "logs",
                host=host,
            )
            services.append(started)
            processes[service] = started.process
        try:
            wait_until_up(services, path="/healthz", timeout=60, interval=0.2)
        except ServiceExited as error:
            raise typer.Exit(
                _fail(f"{error.service.name} exited at start; see {error.service.log_path}")
            ) from error
        except ServiceNotReady as error:
            names = ", ".join(service.name for service in error.services)
            raise typer.Exit(_fail(f"not healthy in time: {names}")) from error
        for service, port in ports.items():
            typer.echo(f"{service:<11} http://{host}:{port}  (docs: /docs)")
        typer.echo(f"logs in {state / 'logs'}; tokens: .venv/bin/incentives token --help")
        typer.echo("Ctrl-C stops everything")
        _wait_for_signal(processes, embedded)
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        if embedded is not None:
            embedded.stop()


def _fail(message: str) -> int:
    typer.echo(message, err=True)
    return 1


def _wait_for_signal(
    processes: dict[str, subprocess.Popen[bytes]] | None = None,
    broker: EmbeddedBroker | None = None,
) -> None:
    """Until Ctrl-C or a service stops; an embedded broker that stops is started again."""
    stop = False

    def handler(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop:
        if processes and any(p.poll() is not None for p in processes.values()):
            dead = [name for name, p in processes.items() if p.poll() is not None]
            typer.echo(f"stopped unexpectedly: {', '.join(dead)}", err=True)
            return
        if broker is not None and not broker.running:
            _restart_broker(broker)
        time.sleep(0.2)


def _restart_broker(broker: EmbeddedBroker) -> None:
    typer.echo(
        f"the broker on {broker.bootstrap_servers} stopped; starting it again (it kept "
        "nothing: each service re-publishes its log from its database on its own)",
        err=True,
    )
    try:
        broker.start()
    except BrokerError as error:
        typer.echo(f"the broker did not start again: {error}; retrying", err=True)
        time.sleep(1)
        return
    typer.echo(f"broker      {broker.bootstrap_servers} started again ({broker.cluster_id})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
