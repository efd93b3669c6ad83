"""Use cases of the fund service, on the service kit: verification against the fund's remit,
capacity and the other programmes' grants; committee votes; commitment that holds capacity;
tranches released by officers and paid once by the payout stage; cancellation.
HTTP routes and consumer stages end up here; neither holds a rule of its own."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Any

from services.fund.adapters import projection, treasury
from services.fund.adapters.tables import capacity
from services.fund.domain.decider import (
    DECIDER,
    CancelInvestment,
    CommitInvestment,
    PayTranche,
    RefuseCommitment,
    ReleaseTranche,
    SubmitApplication,
    VerifyApplication,
    Vote,
)
from services.fund.domain.events import E, VoteChoice
from services.fund.domain.funds import Fund
from services.fund.domain.model import Application, Status, Tranche
from shared.clock import Clock
from shared.contracts import Actor, Envelope, Role
from shared.domain import Conflict, Unprocessable, today_in_korea
from shared.domain.support import RefuseGrant
from shared.eventstore import EventContext, EventStore, UnitOfWork
from shared.kit.application import ApplicationService, Outcome, Stages, caused_by
from shared.kit.payouts import (
    PayoutAttempts,
    PayoutGateway,
    PayoutOrder,
    PayoutUnknown,
    TreasuryError,
)
from shared.kit.support import SupportBook

log = logging.getLogger(__name__)

VERIFIER, COMMITMENT, PAYOUT = (
    Actor(sub=f"fund-{stage}", role=Role.SYSTEM) for stage in ("verifier", "commitment", "payout")
)
"""The stages acting on their own, as their events record them."""


def payout_id(application_id: str, number: int) -> str:
    """A tranche's payout id: paying it again after a crash asks for the same payout."""
    return f"po-{application_id}-t{number}"


class FundService(ApplicationService[Application]):
    def __init__(
        self,
        store: EventStore,
        funds: Mapping[str, Fund],
        catalogue_version: str,
        support: SupportBook,
        payouts: PayoutGateway,
        clock: Clock,
        *,
        attempts: PayoutAttempts | None = None,
    ) -> None:
        """``attempts``: how a treasury is asked to pay, when one pays instead of the
        ledger (None: the ledger pays, in the payout stage's transaction)."""
        super().__init__(store, DECIDER, projection.PROJECTION, clock)
        self.funds = dict(funds)
        self.catalogue_version = catalogue_version
        self.support = support
        self.payouts = payouts
        self.attempts = attempts
        self.payouts_due = asyncio.Event()
        """Set when a tranche is noted due from the treasury: the payout worker looks at once."""

    def stages(self) -> Stages:
        """Verification, commitment and payout react to events on fund.events."""
        return Stages(
            batches={
                E.SUBMITTED: self.when_applications_submitted_verify,
                E.APPROVED: self.when_applications_approved_commit,
            },
            singles={E.TRANCHE_RELEASED: self.when_tranche_released_pay},
        )

    # --- commands from people ----------------------------------------------------------

    def submission(self, command: SubmitApplication) -> SubmitApplication:
        """``command``, once its fund is known (422 naming ``fund_id`` if not)."""
        if command.fund_id not in self.funds:
            known = ", ".join(sorted(self.funds))
            raise Unprocessable(
                f"there is no fund {command.fund_id!r}; the funds are {known}", field="fund_id"
            )
        return command

    @staticmethod
    def vote(*, member: str, vote: VoteChoice, reason: str, conflict_of_interest: bool) -> Vote:
        return Vote(
            member=member, vote=vote, reason=reason, conflict_of_interest=conflict_of_interest
        )

    async def release_tranche(
        self,
        uow: UnitOfWork,
        application_id: str,
        number: int,
        *,
        milestone_evidence: str,
        context: EventContext,
    ) -> Outcome[Application]:
        """An officer releases tranche ``number``; the payout stage then pays it, once."""
        command = ReleaseTranche(
            number=number, milestone_evidence=milestone_evidence, officer=context.actor.sub
        )
        return await self.execute(uow, application_id, command, context)

    async def cancel(
        self,
        uow: UnitOfWork,
        application_id: str,
        *,
        reason: str,
        context: EventContext,
        settled: Collection[str] = (),
    ) -> Outcome[Application]:
        """An officer cancels a committed investment: what was not disbursed goes back to the
        fund and its parents, in the same transaction. Where a treasury pays, it runs inside
        :meth:`payouts_settled`, whose payouts are ``settled``: the treasury is not to pay
        them now. A tranche released for it since (not settled) makes this a conflict, to
        be asked again, rather than a cancellation that crosses its payment."""
        command = CancelInvestment(officer=context.actor.sub, reason=reason)
        outcome = await self.execute(uow, application_id, command, context)
        returned = outcome.application.returned_amount
        if outcome.events and returned:
            await self._give_back(uow, outcome.application.fund_id, returned)
        if outcome.events and self.attempts is not None:
            for due in await treasury.due_of(uow.connection, application_id):
                if due.payout_id not in settled:
                    raise Conflict(
                        f"tranche {due.number} was released for the treasury to pay while"
                        " this cancellation was being made; nothing was cancelled, ask again",
                        number=due.number,
                    )
            await treasury.drop(uow, application_id)
        return outcome

    # --- policies: what the service does on its own ------------------------------------

    async def when_applications_submitted_verify(
        self, uow: UnitOfWork, events: Sequence[Envelope]
    ) -> None:
        """Verify submitted applications together: one read of the capacities and one of the
        other programmes' grants for the whole batch."""
        left = await capacity.read(uow.connection)
        submitted = [e for e in events if e.type == E.SUBMITTED]
        asked = [
            (
                e.firm_id or "",
                today_in_korea(e.occurred_at).year,
                str(e.payload.get("cost_reference") or "") or None,
            )
            for e in submitted
        ]
        found = await self.support.facts(uow, asked)
        facts = dict(zip((e.aggregate_id for e in submitted), found, strict=True))

        async def verify(state: Application) -> VerifyApplication:
            chain = projection.lineage(self.funds, state.fund_id)
            support = facts.get(state.id)
            if support is None:  # not in the batch's read (an event without its firm id)
                year = today_in_korea(state.created_at).year
                [support] = await self.support.facts(
                    uow, [(state.firm_id, year, state.cost_reference)]
                )
            return VerifyApplication(
                fund=self.funds.get(state.fund_id),
                catalogue_version=self.catalogue_version,
                available_capacity=min((left[f][1] for f in chain if f in left), default=0),
                support=support,
            )

        await self.react(uow, events, VERIFIER, verify, only_in=Status.SUBMITTED)

    async def when_applications_approved_commit(
        self, uow: UnitOfWork, events: Sequence[Envelope]
    ) -> None:
        """Commit approved investments: each holds its amount from its fund and every parent
        in the stage's transaction, or, if one of them no longer has it, is rejected. The
        pools' check constraints make an overcommitment impossible whatever runs concurrently.
        The support limits are checked again, under the firms' locks: an investment that
        would pass them is rejected too, and its capacity given back.

        The batch first tries one hold per pool for all its approvals together (as the
        applications' rows say them); only if a pool cannot hold them all does each
        application hold on its own, in order, so that those that fit are committed."""
        now = self.clock.now()
        committed_on = today_in_korea(now)
        # the firms' grants first (before the applications and the pools: one lock order)
        gate = await self.support.gate(uow, {e.firm_id for e in events if e.firm_id}, now)
        approved = await projection.approved_amounts(uow, [e.aggregate_id for e in events])
        together: dict[str, int] = {}
        for fund_id, amount in approved.values():
            for pool in projection.lineage(self.funds, fund_id):
                together[pool] = together.get(pool, 0) + amount
        held: dict[str, tuple[str, int]] | None = None

        async def hold_for_the_batch() -> dict[str, tuple[str, int]]:
            # called once the kit has locked the batch's applications: the pools come after,
            # in pool order, as a cancellation takes them (no lock cycle), all of them at
            # once so that holds taken one by one later wait on nobody
            await capacity.lock(uow, list(together))
            return dict(approved) if together and await capacity.hold_all(uow, together) else {}

        async def hold(state: Application) -> RefuseCommitment | None:
            nonlocal held
            if held is None:
                held = await hold_for_the_batch()
            amount = state.approved_amount or 0
            taken = held.pop(state.id, None)
            if taken == (state.fund_id, amount):
                return None
            if taken is not None:  # the row said other terms than the log: give them back
                await self._give_back(uow, *taken)
            pools = projection.lineage(self.funds, state.fund_id)
            left = min((await capacity.lock(uow, pools)).values(), default=0)
            if left >= amount and await capacity.hold_all(uow, dict.fromkeys(pools, amount)):
                return None
            return RefuseCommitment(available_capacity=left)  # read under the pools' locks

        async def commit(state: Application) -> CommitInvestment | RefuseCommitment | RefuseGrant:
            short = await hold(state)
            if short is not None:
                return short
            refusal = gate.admit(
                application_id=state.id,
                firm_id=state.firm_id,
                year=committed_on.year,  # an investment counts in the year it is committed
                cost_reference=state.cost_reference,
                amount=state.approved_amount or 0,
            )
            if refusal is not None:  # the support limits are passed: the capacity goes back
                await self._give_back(uow, state.fund_id, state.approved_amount or 0)
                return refusal
            return CommitInvestment(committed_on=committed_on)

        outcomes = await self.react(uow, events, COMMITMENT, commit, only_in=Status.APPROVED)
        await self.support.record_grants(uow, [e for o in outcomes for e in o.events])
        for fund_id, amount in (held or {}).values():  # held for one not approved any more
            await self._give_back(uow, fund_id, amount)

    async def _give_back(self, uow: UnitOfWork, fund_id: str, amount: int) -> None:
        """Return ``amount`` to the fund and every parent."""
        for pool in sorted(projection.lineage(self.funds, fund_id)):
            await capacity.release(uow, pool, amount)

    async def when_tranche_released_pay(self, uow: UnitOfWork, event: Envelope) -> None:
        """Pay a released tranche through the payout gateway, exactly once. The ledger pays
        here: its entry and the event commit together. A treasury is paid by the payout
        worker (:meth:`pay_due`), outside any command's transaction: the tranche is noted
        due here. A tranche paid (or cancelled) already is passed over."""
        number = int(event.payload["number"])

        async def pay(state: Application) -> PayTranche | None:
            if _released(state, number) is None:
                return None  # paid already, or cancelled with the investment
            if not self.payouts.in_database:
                due = treasury.Due(
                    payout_id(state.id, number),
                    state.id,
                    number,
                    release_event_id=event.event_id,
                    correlation_id=event.correlation_id,
                )
                await treasury.note_due(uow, due, event.occurred_at)
                self.payouts_due.set()
                return None
            receipt = await self.payouts.pay(uow, _order(state, number))
            return PayTranche(number=number, payout_id=receipt.payout_id)

        await self.execute(uow, event.aggregate_id, pay, caused_by(event, PAYOUT))

    # --- tranches paid by a treasury -------------------------------------------------------

    async def pay_due(self) -> int:
        """One attempt at each tranche due from the treasury whose back-off is over and that
        no other attempt holds, outside any command's transaction; each the treasury paid is
        recorded paid. A tranche the treasury keeps refusing stays released and is asked for
        again, longer apart each time (at most a minute apart); an officer may cancel the
        investment meanwhile. Returns how many were paid."""
        attempts = self.attempts
        if attempts is None:
            return 0
        async with self.store.engine.connect() as connection:
            due = await treasury.all_due(connection)
        paid = 0
        for tranche in due:
            try:
                paid += await self._pay_due(attempts, tranche)
            except Exception:
                log.exception("tranche payout %s could not be settled", tranche.payout_id)
        return paid

    async def _pay_due(self, attempts: PayoutAttempts, due: treasury.Due) -> int:
        state = self.decider.fold(await self.store.read_stream(due.application_id))
        if state is None or _released(state, due.number) is None:
            # paid or cancelled: what records either drops the row too, so this is a guard
            log.warning("tranche payout %s is not due any more; dropped", due.payout_id)
            await self.in_transaction(
                functools.partial(
                    treasury.drop, application_id=due.application_id, number=due.number
                )
            )
            return 0
        still_due = functools.partial(treasury.is_due, self.store.engine, due.payout_id)
        attempted = await attempts.attempt(_order(state, due.number), still_due)
        if attempted is None or attempted.receipt is None:
            return 0  # not due yet, held by another attempt, or failed: asked again later
        await self._record_paid(due, attempted.receipt.payout_id)
        return 1

    async def _record_paid(self, due: treasury.Due, paid_as: str) -> None:
        """The treasury paid the tranche: recorded once (again, it changes nothing)."""
        context = EventContext(
            actor=PAYOUT, correlation_id=due.correlation_id, causation_id=due.release_event_id
        )

        async def work(uow: UnitOfWork) -> None:
            pay = PayTranche(number=due.number, payout_id=paid_as)
            await self.execute(uow, due.application_id, pay, context)
            await treasury.drop(uow, due.application_id, due.number)

        await self.in_transaction(work)

    @contextlib.asynccontextmanager
    async def payouts_settled(self, application_id: str) -> AsyncIterator[frozenset[str]]:
        """For the block, no attempt at the application's tranche payouts due is under way
        or begins, and each the treasury made is recorded paid first: what the block decides
        about the tranches (a cancellation) cannot cross a payment. Yields the payout ids
        held. Raises :class:`PayoutUnknown`, changing nothing, if the treasury cannot say
        what it paid."""
        attempts = self.attempts
        if attempts is None:  # the ledger pays in the payout stage's transaction
            yield frozenset()
            return
        async with self.store.engine.connect() as connection:
            due = await treasury.due_of(connection, application_id)
        async with attempts.lock_all([d.payout_id for d in due]):
            for tranche in due:
                if not await treasury.is_due(self.store.engine, tranche.payout_id):
                    continue  # recorded paid meanwhile
                try:
                    made = await self.payouts.find(None, tranche.payout_id)
                except TreasuryError as error:
                    raise PayoutUnknown(
                        f"the treasury cannot say now whether it paid tranche {tranche.number}"
                        f" ({tranche.payout_id}): {error}; nothing was changed"
                    ) from error
                if made is not None:  # paid after all: recorded paid, never given back
                    await self._record_paid(tranche, made.payout_id)
            yield frozenset(d.payout_id for d in due)

    # --- reads -------------------------------------------------------------------------

    async def fund_list(self) -> list[dict[str, Any]]:
        return await self.read(projection.fund_figures, self.funds)


def _released(state: Application | None, number: int) -> Tranche | None:
    """Tranche ``number`` of a committed investment if it is released (not yet paid)."""
    if state is None or state.status is not Status.COMMITTED:
        return None
    tranche = state.tranche(number)
    return tranche if tranche is not None and tranche.status == "released" else None


def _order(state: Application, number: int) -> PayoutOrder:
    """The payment of tranche ``number`` (released) from the fund to the investee."""
    tranche = state.tranche(number)
    assert tranche is not None
    return PayoutOrder(
        payout_id=payout_id(state.id, number),
        reference=f"{state.id}:tranche:{number}",
        payer=f"fund:{state.fund_id}",
        payee=f"firm:{state.firm_id}",
        amount=tranche.amount,
    )


__all__ = ["COMMITMENT", "PAYOUT", "VERIFIER", "FundService", "payout_id"]
