"""Reading oversight's read model: the figures of the summary and the page."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.fund.domain.funds import Fund, lineage
from services.oversight.adapters.tables import received, standings, transitions
from services.oversight.domain.standing import POOL_EVENT_TYPES, pool_totals
from shared.contracts import Envelope
from shared.contracts.envelope import format_timestamp
from shared.domain.support import SupportConflictDetected

CONFLICT = SupportConflictDetected.event_type


@dataclass(frozen=True)
class Budgets:
    """What the programmes may spend, from the catalogues the services load: the totals
    until the services' own events say them (see :func:`recorded_totals`), and the funds'
    parents always."""

    voucher: Mapping[str, int]
    """Each voucher programme's budget."""
    funds: Mapping[str, Fund]
    """Each fund, with its capacity and parent."""


async def recorded_totals(connection: AsyncConnection) -> dict[tuple[str, str], int]:
    """Each budget's and fund capacity's total as the services' events last set it
    (opened, topped up, cut), by ``(service, pool id)``."""
    rows = await connection.execute(
        sa.select(received.c.service, received.c.envelope).where(
            received.c.type.in_(POOL_EVENT_TYPES)
        )
    )
    return pool_totals((service, Envelope.model_validate_json(text)) for service, text in rows)


async def programmes(connection: AsyncConnection, budgets: Budgets) -> list[dict[str, Any]]:
    """Per programme: applications by status and the money figures of its service. A
    budget's or capacity's total is the one its events recorded (the catalogue's as the
    service last applied it), else the catalogue's oversight reads."""
    s = standings
    counted = await connection.execute(
        sa.select(s.c.service, s.c.programme_id, s.c.status, sa.func.count()).group_by(
            s.c.service, s.c.programme_id, s.c.status
        )
    )
    statuses: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for service, programme_id, status, count in counted:
        if programme_id:  # "": never folded, listed under "unreadable"
            statuses[(service, programme_id)][status] = int(count)
    summed = await connection.execute(
        sa.select(
            s.c.service,
            s.c.programme_id,
            sa.func.sum(s.c.committed),
            sa.func.sum(s.c.paid),
            sa.func.sum(s.c.certified),
            sa.func.sum(s.c.clawed_back),
        ).group_by(s.c.service, s.c.programme_id)
    )
    money: dict[tuple[str, str], tuple[int, int, int, int]] = {
        (service, pid): (int(c or 0), int(p or 0), int(cert or 0), int(claw or 0))
        for service, pid, c, p, cert, claw in summed
    }
    for programme_id in budgets.voucher:
        statuses.setdefault(("voucher", programme_id), {})
    for fund_id in budgets.funds:
        statuses.setdefault(("fund", fund_id), {})
    recorded = await recorded_totals(connection)
    for key in recorded:
        statuses.setdefault(key, {})
    fund_totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (service, fund_id), (committed, paid, _, _) in money.items():
        if service == "fund":
            for ancestor in lineage(budgets.funds, fund_id) or [fund_id]:
                fund_totals[ancestor][0] += committed
                fund_totals[ancestor][1] += paid
    found = []
    for (service, programme_id), by_status in sorted(statuses.items()):
        committed, paid, certified, clawed_back = money.get((service, programme_id), (0, 0, 0, 0))
        figures: dict[str, int]
        if service == "voucher":
            total = recorded.get((service, programme_id), budgets.voucher.get(programme_id, 0))
            figures = {
                "budget_total": total,
                "committed": committed,
                "paid": paid,
                "available": total - committed - paid,
            }
        elif service == "fund":
            fund = budgets.funds.get(programme_id)
            capacity = recorded.get(
                (service, programme_id), fund.capacity if fund is not None else 0
            )
            committed, disbursed = fund_totals[programme_id]
            figures = {
                "capacity": capacity,
                "committed": committed,
                "disbursed": disbursed,
                "available": capacity - committed - disbursed,
            }
        else:
            figures = {"certified": certified, "clawed_back": clawed_back}
        found.append(
            {
                "service": service,
                "programme_id": programme_id,
                "statuses": dict(sorted(by_status.items())),
                "money": figures,
            }
        )
    return found


async def clusters(connection: AsyncConnection) -> list[dict[str, Any]]:
    """Applications by status per cluster (every programme together)."""
    s = standings
    rows = await connection.execute(
        sa.select(s.c.cluster, s.c.status, sa.func.count())
        .where(s.c.cluster != "")
        .group_by(s.c.cluster, s.c.status)
    )
    found: dict[str, dict[str, int]] = defaultdict(dict)
    for cluster, status, count in rows:
        found[cluster][status] = int(count)
    return [{"cluster": c, "statuses": dict(sorted(v.items()))} for c, v in sorted(found.items())]


async def stuck(
    connection: AsyncConnection, now: datetime, after: timedelta, limit: int = 100
) -> list[dict[str, Any]]:
    """Open applications in one status for longer than ``after``, longest first."""
    s = standings
    rows = await connection.execute(
        sa.select(s.c.service, s.c.application_id, s.c.status, s.c.status_since)
        .where(s.c.is_open)
        .where(s.c.status_since < now - after)
        .order_by(s.c.status_since)
        .limit(limit)
    )
    return [
        {
            "service": r.service,
            "application_id": r.application_id,
            "status": r.status,
            "since": format_timestamp(r.status_since),
        }
        for r in rows
    ]


async def stuck_count(connection: AsyncConnection, now: datetime, after: timedelta) -> int:
    s = standings
    count = await connection.scalar(
        sa.select(sa.func.count())
        .select_from(s)
        .where(s.c.is_open)
        .where(s.c.status_since < now - after)
    )
    return int(count or 0)


async def unreadable(connection: AsyncConnection) -> list[dict[str, Any]]:
    """Applications whose log does not fold (a gap, a corrupt event), and why."""
    s = standings
    rows = await connection.execute(
        sa.select(s.c.service, s.c.application_id, s.c.unreadable)
        .where(s.c.unreadable.is_not(None))
        .order_by(s.c.service, s.c.application_id)
        .limit(100)
    )
    return [
        {"service": r.service, "application_id": r.application_id, "why": r.unreadable}
        for r in rows
    ]


async def conflicts(connection: AsyncConnection, latest: int = 20) -> tuple[int, list[str]]:
    """How many ``support.conflict.detected`` events arrived, and the latest envelopes."""
    count = await connection.scalar(
        sa.select(sa.func.count()).select_from(received).where(received.c.type == CONFLICT)
    )
    rows = await connection.execute(
        sa.select(received.c.envelope)
        .where(received.c.type == CONFLICT)
        .order_by(received.c.seq.desc())
        .limit(latest)
    )
    return int(count or 0), [r.envelope for r in rows]


async def series(connection: AsyncConnection, now: datetime, minutes: int = 60) -> dict[str, Any]:
    """Per minute over the last ``minutes``: status changes into each status (throughput)
    and the mean and longest time spent in the status before (per-stage latency)."""
    t = transitions
    first = int(now.timestamp()) // 60 - minutes + 1
    rows = await connection.execute(
        sa.select(
            t.c.minute,
            t.c.service,
            t.c.from_status,
            t.c.to_status,
            sa.func.count(),
            sa.func.sum(t.c.seconds),
            sa.func.max(t.c.seconds),
        )
        .where(t.c.minute >= first)
        .group_by(t.c.minute, t.c.service, t.c.from_status, t.c.to_status)
        .order_by(t.c.minute)
    )
    points = [
        {
            "minute": format_timestamp(datetime.fromtimestamp(int(minute) * 60, tz=now.tzinfo)),
            "service": service,
            "stage": f"{from_status}→{to_status}",
            "to_status": to_status,
            "count": int(count),
            "mean_seconds": round(float(total) / int(count), 3),
            "max_seconds": round(float(longest), 3),
        }
        for minute, service, from_status, to_status, count, total, longest in rows
    ]
    return {"minutes": minutes, "points": points}


async def events_received(connection: AsyncConnection) -> list[dict[str, Any]]:
    """Events received per service, and the last oversight sequence number."""
    rows = await connection.execute(
        sa.select(received.c.service, sa.func.count(), sa.func.max(received.c.seq)).group_by(
            received.c.service
        )
    )
    return [{"service": s, "events": int(c), "last_seq": int(m)} for s, c, m in rows]
