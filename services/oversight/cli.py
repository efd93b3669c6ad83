"""The ``incentives`` command with the auditor's replaying commands: ``audit history``,
``audit replay`` and ``audit diff``. They fold each programme's log with the programme's
own ``evolve`` (its published domain package), which is why they live with oversight and
not in ``shared``; the rest of the command is :mod:`shared.cli`."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Annotated, Any

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from services.oversight.domain.replay import replay as replay_log
from shared.audit import Finding, Report
from shared.audit_cli import (
    BootstrapOption,
    JsonOption,
    PrefixOption,
    ServiceOption,
    SourceOption,
    TokenOption,
    auditor_token,
    log_reader,
    parse_time,
    print_report,
    services_of,
)
from shared.audit_cli import audit as audit_commands
from shared.cli import SERVICES as PORTS
from shared.cli import app
from shared.contracts import Envelope
from shared.contracts.chain import verify_chain
from shared.settings import ServiceSettings


def _envelopes(service: str, events: list[tuple[int, Any]], report: Report) -> list[Envelope]:
    """The events as envelopes; one that is not an envelope is a finding, not a crash."""
    found = []
    for position, document in events:
        try:
            found.append(Envelope.model_validate(document))
        except ValidationError as error:
            report.findings.append(
                Finding(
                    "modified",
                    service,
                    expected="an event envelope",
                    found=str(error.errors()[0]["msg"]),
                    position=position,
                )
            )
    return found


@audit_commands.command()
def history(
    application_id: Annotated[str, typer.Argument(help="the application's id")],
    service: ServiceOption = None,
    topic_prefix: PrefixOption = "",
    bootstrap: BootstrapOption = None,
    source: SourceOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """An application's readable timeline: who did what and when, amounts, reasons, and
    whether its hash chain holds."""
    settings = ServiceSettings()
    services = services_of(service, source)
    with log_reader(
        settings,
        bootstrap=bootstrap,
        prefix=topic_prefix,
        source=source,
        token=token,
        quiet=as_json,
    ) as reader:
        for name in services:
            log = reader.read(name)
            mine = {
                e["event_id"]: (p, e)
                for p, e in log.events
                if isinstance(e, dict) and e.get("aggregate_id") == application_id
            }
            if mine:
                break
        else:
            raise typer.BadParameter(
                f"no application {application_id} in {', '.join(services)}",
                param_hint="APPLICATION_ID",
            )
    ordered = sorted(mine.values(), key=lambda pe: (pe[1].get("aggregate_seq", 0), pe[0]))
    chain = verify_chain([e for _, e in ordered])
    broken = [
        {"kind": b.kind.value, "event_id": b.event_id, "detail": b.detail} for b in chain.breaks
    ]
    timeline = [_line(position, event) for position, event in ordered]
    if as_json:
        document = {
            "service": name,
            "application_id": application_id,
            "events": timeline,
            "chain": {"intact": not broken, "breaks": broken},
        }
        typer.echo(json.dumps(document, indent=2))
        return
    table = Table(title=f"{name} application {application_id}")
    for column in ("#", "position", "when", "what", "who", "details"):
        table.add_column(column)
    for line in timeline:
        table.add_row(
            str(line["seq"]),
            str(line["position"]),
            line["occurred_at"],
            line["type"],
            line["actor"],
            "; ".join(f"{k}: {v}" for k, v in line["details"].items()),
        )
    Console().print(table)
    typer.echo("chain intact" if not broken else f"chain BROKEN: {broken}")


DETAILS = (
    "amount",
    "requested_amount",
    "approved_amount",
    "returned_amount",
    "decision",
    "vote",
    "reason",
    "reasons",
    "conflict_of_interest",
    "voucher_id",
    "payout_id",
    "tranche",
    "number",
    "credit",
    "certificate_number",
    "investor_firm_id",
)


def _line(position: int, event: Mapping[str, Any]) -> dict[str, Any]:
    raw = event.get("payload")
    payload: dict[str, Any] = raw if isinstance(raw, dict) else {}
    actor = event.get("actor") or {}
    details = {k: payload[k] for k in DETAILS if k in payload}
    if isinstance(details.get("credit"), dict):
        details["credit"] = details["credit"].get("amount")
    if isinstance(details.get("reasons"), list):
        details["reasons"] = ", ".join(
            str(r.get("code", r)) if isinstance(r, dict) else str(r) for r in details["reasons"]
        )
    return {
        "seq": event.get("aggregate_seq"),
        "position": position,
        "occurred_at": event.get("occurred_at"),
        "type": event.get("type"),
        "actor": f"{actor.get('sub')} ({actor.get('role')})",
        "details": details,
        "hash": event.get("hash"),
    }


@audit_commands.command()
def replay(
    as_of: Annotated[str, typer.Option(help="RFC 3339, e.g. 2026-12-01T09:30:00Z")],
    service: ServiceOption = None,
    topic_prefix: PrefixOption = "",
    bootstrap: BootstrapOption = None,
    source: SourceOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """The state of every application at a moment, folded with the services' own evolve."""
    moment = parse_time(as_of, "--as-of")
    settings = ServiceSettings()
    services = services_of(service, source)
    rows: list[dict[str, Any]] = []
    report = Report()
    with log_reader(
        settings,
        bootstrap=bootstrap,
        prefix=topic_prefix,
        source=source,
        token=token,
        quiet=as_json,
    ) as reader:
        for name in services:
            log = reader.read(name)
            standings, unreadable = replay_log(name, _envelopes(name, log.events, report), moment)
            rows += [
                {
                    "service": name,
                    "application_id": s.application_id,
                    "status": s.status,
                    "version": s.version,
                }
                for s in standings
            ]
            rows += [
                {"service": name, "application_id": a, "status": "unreadable", "version": None}
                for a in unreadable
            ]
    if as_json:
        document = {"as_of": moment.isoformat().replace("+00:00", "Z"), "applications": rows}
        typer.echo(json.dumps(document, indent=2))
        return
    table = Table(title=f"applications as of {moment.isoformat()}")
    for column in ("service", "application", "status", "version"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["service"], row["application_id"], row["status"], str(row["version"]))
    Console().print(table)


@audit_commands.command()
def diff(
    service: ServiceOption = None,
    topic_prefix: PrefixOption = "",
    bootstrap: BootstrapOption = None,
    url: Annotated[
        list[str] | None,
        typer.Option(help="SERVICE=URL of a service's API (default: the ports of make run)"),
    ] = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """The state replayed now against what each service's API reports: every application
    missing on either side, or in another status or version, is a finding."""
    settings = ServiceSettings()
    services = services_of(service, None)
    urls = {s: f"http://127.0.0.1:{PORTS[s]}" for s in services}
    for item in url or []:
        name, _, address = item.partition("=")
        if name not in urls or not address:
            raise typer.BadParameter(f"expected SERVICE=URL, got {item!r}", param_hint="--url")
        urls[name] = address
    bearer = auditor_token(token, settings)
    report = Report()
    with log_reader(
        settings, bootstrap=bootstrap, prefix=topic_prefix, source=None, token=None, quiet=as_json
    ) as reader:
        for name in services:
            log = reader.read(name)
            replayed, unreadable = replay_log(name, _envelopes(name, log.events, report))
            reported = _reported(urls[name], bearer)
            report.checked[f"{name}.applications"] = len(replayed)
            for application_id, why in unreadable.items():
                report.findings.append(
                    Finding("diff", name, "a log that folds", why, application_id=application_id)
                )
            for state in replayed:
                theirs = reported.pop(state.application_id, None)
                ours = {"status": state.status, "version": state.version}
                if theirs != ours:
                    report.findings.append(
                        Finding("diff", name, ours, theirs, application_id=state.application_id)
                    )
            for application_id, theirs in sorted(reported.items()):
                if application_id not in unreadable:
                    report.findings.append(
                        Finding("diff", name, None, theirs, application_id=application_id)
                    )
    print_report(report, as_json)
    sys.exit(0 if report.ok else 1)


def _reported(base_url: str, token: str) -> dict[str, dict[str, Any]]:
    """Every application the service's API lists: its status and version."""
    found: dict[str, dict[str, Any]] = {}
    with httpx.Client(
        base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/v1/applications", params=params)
            page.raise_for_status()
            for item in page.json()["items"]:
                found[item["id"]] = {"status": item["status"], "version": item["version"]}
            cursor = page.json()["next_cursor"]
            if cursor is None:
                return found


def main() -> None:
    app()


__all__ = ["app", "main"]
