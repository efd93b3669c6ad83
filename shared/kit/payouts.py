"""The payout gateway port and its two adapters: the in-database ledger and a treasury over HTTP.

A payout id is derived from what it pays (a redemption, a tranche), so a retry after a
crash asks for the same payout again and the payee is paid once.

The ledger pays in the stage's own transaction. A treasury is called outside any command's
transaction and row locks (:class:`PayoutAttempts`): each attempt holds only its payout's
row in ``payout_attempts``, counts the failures, and says when the next may be made; an
officer cancelling a failed payout takes the same row, so no attempt is under way while
the treasury is asked whether it paid.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import httpx
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.eventstore import UnitOfWork
from shared.eventstore.schema import UTCDateTime
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PayoutOrder:
    payout_id: str
    """The idempotency key of the payment: the same id is never paid twice."""
    reference: str
    """What is paid: a redemption id, a tranche of an investment."""
    payer: str
    """The account debited (``programme:<id>``, ``fund:<id>``)."""
    payee: str
    """The account credited (``provider:<id>``, ``firm:<id>``)."""
    amount: int


@dataclass(frozen=True, slots=True)
class PayoutReceipt:
    payout_id: str
    reference: str


class PayoutGateway(Protocol):
    in_database: bool
    """Pays in the caller's transaction (a ledger), rather than over the network."""

    async def pay(self, uow: UnitOfWork | None, order: PayoutOrder) -> PayoutReceipt:
        """Pay ``order`` once, whatever happened to earlier attempts with the same payout id."""
        ...

    async def find(self, uow: UnitOfWork | None, payout_id: str) -> PayoutReceipt | None:
        """The payout ``payout_id`` if it was made, else None; :class:`TreasuryError` if
        that cannot be learnt now."""
        ...


def ledger_table(metadata: sa.MetaData) -> sa.Table:
    """``ledger_entries``: one double entry per payout id, one per thing paid."""
    return sa.Table(
        "ledger_entries",
        metadata,
        sa.Column("payout_id", sa.String(100), primary_key=True),
        sa.Column("debit_account", sa.String(100), nullable=False),
        sa.Column("credit_account", sa.String(100), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("reference", sa.String(200), nullable=False, unique=True),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_ledger_positive"),
    )


class LedgerPayouts:
    """Double entry in the service's own database, in the payout stage's transaction."""

    in_database = True

    def __init__(self, table: sa.Table) -> None:
        self.table = table

    async def find(self, uow: UnitOfWork | None, payout_id: str) -> PayoutReceipt | None:
        if uow is None:
            raise ValueError("the ledger is read in a transaction")
        t = self.table
        found = await uow.connection.scalar(
            sa.select(t.c.payout_id).where(t.c.payout_id == payout_id)
        )
        return PayoutReceipt(payout_id, f"ledger:{payout_id}") if found else None

    async def pay(self, uow: UnitOfWork | None, order: PayoutOrder) -> PayoutReceipt:
        if uow is None:
            raise ValueError("the ledger pays in the stage's transaction")
        t = self.table
        booked = await uow.connection.execute(
            sa.select(t.c.payout_id).where(t.c.payout_id == order.payout_id)
        )
        if booked.first() is None:
            await uow.connection.execute(
                t.insert().values(
                    payout_id=order.payout_id,
                    debit_account=order.payer,
                    credit_account=order.payee,
                    amount=order.amount,
                    reference=order.reference,
                    recorded_at=uow.now,
                )
            )
        return PayoutReceipt(order.payout_id, reference=f"ledger:{order.payout_id}")


class TreasuryError(RuntimeError):
    pass


class PayoutUnknown(RuntimeError):
    """Whether a payout was made cannot be learnt now (the treasury does not answer): what
    depends on the answer, such as a cancellation, must wait (HTTP 503)."""

    code = "treasury_unavailable"


def attempts_table(metadata: sa.MetaData) -> sa.Table:
    """``payout_attempts``: the failed attempts of each payout made over the network."""
    return sa.Table(
        "payout_attempts",
        metadata,
        sa.Column("payout_id", sa.String(100), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_error", sa.String(1000), nullable=True),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    )


@dataclass(frozen=True, slots=True)
class Attempted:
    """What one attempt came to: a receipt, or the failures counted so far and why."""

    receipt: PayoutReceipt | None
    failures: int = 0
    error: str | None = None


class PayoutAttempts:
    """Payouts over the network, each attempt under its payout's row (not the command's
    transaction or the application's row), with back-off between failures."""

    def __init__(
        self,
        engine: AsyncEngine,
        table: sa.Table,
        gateway: PayoutGateway,
        *,
        first_backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        self.engine = engine
        self.table = table
        self.gateway = gateway
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self._local: dict[str, asyncio.Lock] = {}

    async def attempt(
        self, order: PayoutOrder, still_due: Callable[[], Awaitable[bool]] | None = None
    ) -> Attempted | None:
        """One attempt at ``order`` if it is due and no other is under way (else None).
        Back-off runs on the wall clock: it is about the treasury, not the programme.

        ``still_due`` is asked under the payout's lock, before the treasury: what cancels
        a payout takes the same lock, so a payout it cancelled is not paid after all."""
        now = datetime.now(UTC)
        async with self.lock(order.payout_id, wait=False) as held:
            if held is None:
                return None
            failures, next_at = await self._read(held, order.payout_id)
            if next_at > now:
                return None
            if still_due is not None and not await still_due():
                return None
            try:
                receipt = await self.gateway.pay(None, order)
            except Exception as error:
                failures += 1
                delay = min(self.first_backoff * 2 ** (failures - 1), self.max_backoff)
                reason = f"{type(error).__name__}: {error}"[:1000]
                update = (
                    self.table.update()
                    .where(self.table.c.payout_id == order.payout_id)
                    .values(
                        failures=failures,
                        last_error=reason,
                        next_attempt_at=now + timedelta(seconds=delay),
                    )
                )
                await self._write(held, update)
                log.warning("payout %s failed (%d): %s", order.payout_id, failures, reason)
                return Attempted(None, failures, reason)
            return Attempted(receipt, failures)

    async def forget(self, payout_id: str) -> None:
        """Start counting afresh (an officer retries the payout)."""
        async with self.engine.begin() as connection:
            await connection.execute(self.table.delete().where(self.table.c.payout_id == payout_id))

    @contextlib.asynccontextmanager
    async def lock(self, payout_id: str, *, wait: bool = True) -> AsyncIterator[_Held | None]:
        """Hold the payout for the block: no attempt at it runs meanwhile, in any replica
        (PostgreSQL: its row, ``FOR UPDATE``, in a transaction of its own, through which
        the block writes; SQLite, one process: a lock in memory). Yields None if another
        holds it and not ``wait``."""
        await self._ensure(payout_id)
        if self.engine.dialect.name != "postgresql":
            local = self._local.setdefault(payout_id, asyncio.Lock())
            if local.locked() and not wait:
                yield None
                return
            async with local:
                yield _Held(None)
            return
        async with self.engine.begin() as connection:
            query = (
                sa.select(self.table.c.payout_id)
                .where(self.table.c.payout_id == payout_id)
                .with_for_update(skip_locked=not wait)
            )
            found = (await connection.execute(query)).first()
            yield _Held(connection) if found is not None else None

    @contextlib.asynccontextmanager
    async def lock_all(self, payout_ids: Sequence[str]) -> AsyncIterator[None]:
        """Hold every one of the payouts for the block, as :meth:`lock` holds one (waiting for
        an attempt under way), in payout id order and on one connection however many."""
        ordered = sorted(set(payout_ids))
        for payout_id in ordered:
            await self._ensure(payout_id)
        if self.engine.dialect.name != "postgresql":
            async with contextlib.AsyncExitStack() as held:
                for payout_id in ordered:
                    await held.enter_async_context(
                        self._local.setdefault(payout_id, asyncio.Lock())
                    )
                yield
            return
        async with self.engine.begin() as connection:
            if ordered:
                await connection.execute(
                    sa.select(self.table.c.payout_id)
                    .where(self.table.c.payout_id.in_(ordered))
                    .order_by(self.table.c.payout_id)
                    .with_for_update()
                )
            yield

    async def _ensure(self, payout_id: str) -> None:
        async with self.engine.begin() as connection:
            dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
            await connection.execute(
                dialect.insert(self.table)
                .values(payout_id=payout_id, failures=0, next_attempt_at=_LONG_AGO)
                .on_conflict_do_nothing()
            )

    async def _read(self, held: _Held, payout_id: str) -> tuple[int, datetime]:
        query = sa.select(self.table.c.failures, self.table.c.next_attempt_at).where(
            self.table.c.payout_id == payout_id
        )
        if held.connection is not None:
            row = (await held.connection.execute(query)).one()
        else:
            async with self.engine.connect() as connection:
                row = (await connection.execute(query)).one()
        return int(row.failures), row.next_attempt_at

    async def _write(self, held: _Held, statement: sa.Executable) -> None:
        if held.connection is not None:
            await held.connection.execute(statement)
            return
        async with self.engine.begin() as connection:
            await connection.execute(statement)


@dataclass(frozen=True, slots=True)
class _Held:
    """A payout held: through ``connection`` (PostgreSQL), or in memory (None)."""

    connection: AsyncConnection | None


_LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def payouts_for(
    settings: ServiceSettings,
    engine: AsyncEngine,
    ledger: sa.Table,
    attempts: sa.Table,
    gateway: PayoutGateway | None = None,
) -> tuple[PayoutGateway, PayoutAttempts | None]:
    """What pays a service's payouts: ``gateway`` if given, else the treasury over HTTP
    when one is configured, else its own ``ledger``; and, for one over the network, how
    each payout is attempted (its failures in the ``attempts`` table; None for a ledger)."""
    if gateway is None:
        if settings.treasury_url is None:
            gateway = LedgerPayouts(ledger)
        else:
            client = httpx.AsyncClient(timeout=settings.treasury_timeout_seconds)
            gateway = TreasuryPayouts(client, settings.treasury_url, attempts=1)
    if gateway.in_database:
        return gateway, None
    tried = PayoutAttempts(
        engine, attempts, gateway, first_backoff=settings.payout_first_backoff_seconds
    )
    return gateway, tried


@runtime_checkable
class PaysOverTheNetwork(Protocol):
    """A programme service whose payouts a treasury may make: when ``attempts`` is set, the
    kit runs its payout worker (:func:`pay_due_periodically`) for the life of the process."""

    attempts: PayoutAttempts | None
    payouts_due: asyncio.Event

    async def pay_due(self) -> int: ...


async def pay_due_periodically(
    pay_due: Callable[[], Awaitable[int]], due: asyncio.Event, every: float = 1.0
) -> None:
    """The payout worker, when a treasury pays: ``pay_due()`` (one attempt at each payout
    that is due, outside any command's transaction) at once when ``due`` is set, and every
    ``every`` s."""
    while True:
        due.clear()
        try:
            await pay_due()
        except Exception:
            log.exception("paying due payouts failed; trying again later")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(due.wait(), every)


class TreasuryPayouts:
    """A treasury endpoint over HTTP; the payout id is its idempotency key.

    ``POST {url}`` with the order and ``Idempotency-Key: <payout id>`` pays (the same key
    again answers the same payout, paid once); ``GET {url}/{payout id}`` says whether it
    was paid (200) or not (404).
    """

    in_database = False

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        attempts: int = 5,
        first_backoff: float = 0.2,
    ) -> None:
        self._client = client
        self._url = url
        self._attempts = attempts
        self._first_backoff = first_backoff

    async def find(self, uow: UnitOfWork | None, payout_id: str) -> PayoutReceipt | None:
        try:
            response = await self._client.get(f"{self._url.rstrip('/')}/{payout_id}")
        except httpx.TransportError as error:
            raise TreasuryError(f"treasury unreachable about {payout_id}: {error!r}") from error
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise TreasuryError(f"treasury answered {response.status_code} about {payout_id}")
        return PayoutReceipt(payout_id, str(response.json().get("reference", payout_id)))

    async def pay(self, uow: UnitOfWork | None, order: PayoutOrder) -> PayoutReceipt:
        body = {
            "payout_id": order.payout_id,
            "payee": order.payee,
            "payer": order.payer,
            "amount": order.amount,
            "currency": "KRW",
            "reference": order.reference,
        }
        delay = self._first_backoff
        last: Exception | None = None
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.post(
                    self._url, json=body, headers={"Idempotency-Key": order.payout_id}
                )
                if response.status_code < 500:
                    response.raise_for_status()
                    reference = str(response.json().get("reference", order.payout_id))
                    return PayoutReceipt(order.payout_id, reference)
                last = TreasuryError(f"treasury answered {response.status_code}")
            except httpx.TransportError as error:
                last = error
            except httpx.HTTPStatusError as error:
                raise TreasuryError(
                    f"treasury refused payout {order.payout_id}: {error}"
                ) from error
            log.warning("payout %s attempt %d failed: %s", order.payout_id, attempt, last)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise TreasuryError(f"treasury unreachable for payout {order.payout_id}: {last}")


__all__ = [
    "Attempted",
    "LedgerPayouts",
    "PayoutAttempts",
    "PayoutGateway",
    "PayoutOrder",
    "PayoutReceipt",
    "PayoutUnknown",
    "PaysOverTheNetwork",
    "TreasuryError",
    "TreasuryPayouts",
    "attempts_table",
    "ledger_table",
    "pay_due_periodically",
    "payouts_for",
]
