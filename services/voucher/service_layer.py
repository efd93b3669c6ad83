"""Use cases of the voucher service, on the service kit: what the voucher adds to every
programme's load-decide-append-project path is its budget, redemptions, providers and stages,
and the read model of every programme's grants its verification checks.

HTTP routes and Kafka consumers both end up here; neither holds a rule of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from services.voucher.adapters import projection
from services.voucher.adapters.tables import budgets
from services.voucher.domain.decider import (
    DECIDER,
    CancelRedemption,
    DecideApplication,
    ExpireVoucher,
    FailPayout,
    IssueVoucher,
    PayRedemption,
    RequestRedemption,
    RetryPayout,
    SubmitApplication,
    VerifyApplication,
    today_in_korea,
)
from services.voucher.domain.errors import (
    BudgetExhausted,
    DuplicateInvoice,
    DuplicateProvider,
    InvalidTransition,
    NotFound,
    PaidAfterAll,
    Unprocessable,
)
from services.voucher.domain.events import E, ProviderRegistered
from services.voucher.domain.model import Application, Redemption, Status
from services.voucher.domain.programmes import Programme
from shared.clock import Clock
from shared.contracts import Actor, Envelope, Role
from shared.domain import Decision
from shared.domain.support import RefuseGrant, SupportFacts
from shared.eventstore import (
    ConcurrencyConflict,
    EventContext,
    EventStore,
    StreamVersion,
    UnitOfWork,
)
from shared.kit.application import ApplicationService, Outcome, Stages, Step, caused_by, new_id
from shared.kit.payouts import (
    PayoutAttempts,
    PayoutGateway,
    PayoutOrder,
    PayoutUnknown,
    TreasuryError,
)
from shared.kit.support import SupportBook

VERIFIER = Actor(sub="voucher-verifier", role=Role.SYSTEM)
ISSUER = Actor(sub="voucher-issue", role=Role.SYSTEM)
PAYOUT_STAGE = Actor(sub="voucher-payout", role=Role.SYSTEM)
EXPIRY = Actor(sub="voucher-expiry", role=Role.SYSTEM)


SupportKey = tuple[str, int, str | None]
"""What the support read model is asked about an application: firm, year, cost."""


def _support_key(submitted: Envelope) -> SupportKey:
    """The firm, year and cost of a submission, as its application will say them: the
    owner's firm id, the year of the submission's date in Korea, the cost it names."""
    cost = submitted.payload.get("cost_reference")
    return (
        submitted.firm_id or "",
        today_in_korea(submitted.occurred_at).year,
        cost if isinstance(cost, str) and cost else None,
    )


class VoucherService(ApplicationService[Application]):
    def __init__(
        self,
        store: EventStore,
        programmes: dict[str, Programme],
        payouts: PayoutGateway,
        clock: Clock,
        support: SupportBook,
        attempts: PayoutAttempts | None = None,
        max_payout_attempts: int = 5,
    ) -> None:
        """``attempts``: how a payout over the network is tried (None: the ledger pays in
        the stage's transaction); after ``max_payout_attempts`` failures it waits for an
        officer."""
        super().__init__(store, DECIDER, projection.PROJECTION, clock)
        self.programmes = programmes
        self.payouts = payouts
        self.attempts = attempts
        self.max_payout_attempts = max_payout_attempts
        self.payouts_due = asyncio.Event()
        """Set when a payout may be due: the payout worker looks at once."""
        self.support = support
        """Every programme's grants (fed from their topics), checked at verification."""

    def programme(self, programme_id: str) -> Programme:
        found = self.programmes.get(programme_id)
        if found is None:
            raise NotFound(f"there is no programme {programme_id}")
        return found

    def stages(self) -> Stages:
        """Verification, voucher issue and payout react to events on voucher.events."""
        return Stages(
            batches={
                E.SUBMITTED: self.when_applications_submitted_verify,
                E.APPROVED: self.when_applications_approved_issue_vouchers,
            },
            singles={
                E.REDEMPTION_REQUESTED: self.when_redemption_requested_pay,
                E.REDEMPTION_PAYOUT_RETRIED: self.when_redemption_requested_pay,
            },
        )

    # --- commands from people ----------------------------------------------------------

    def submission(self, command: SubmitApplication) -> SubmitApplication:
        """``command``, once its programme is known to exist (422 naming the field if not)."""
        if command.programme_id not in self.programmes:
            raise Unprocessable(
                f"there is no programme {command.programme_id!r}", field="programme_id"
            )
        return command

    def decision(
        self,
        *,
        officer: str,
        decision: Decision,
        reason: str,
        approved_amount: int | None,
    ) -> Any:
        """An officer's decision, as a function of the application's state; an approval
        then holds its budget (:meth:`after_decisions`)."""

        async def command(state: Application) -> DecideApplication:
            return DecideApplication(
                officer=officer,
                decision=decision,
                reason=reason,
                programme=self.programme(state.programme_id),
                approved_amount=approved_amount,
            )

        return command

    async def decide_application(
        self,
        uow: UnitOfWork,
        application_id: str,
        *,
        decision: Decision,
        reason: str,
        approved_amount: int | None,
        context: EventContext,
    ) -> Outcome[Application]:
        command = self.decision(
            officer=context.actor.sub,
            decision=decision,
            reason=reason,
            approved_amount=approved_amount,
        )
        outcome = await self.execute(uow, application_id, command, context)
        await self.after_decisions(uow, [outcome])
        return outcome

    async def after_decisions(self, uow: UnitOfWork, outcomes: Sequence[Outcome[Any]]) -> None:
        """Take what the approvals among ``outcomes`` granted from their programmes' budgets,
        one statement per programme; :class:`BudgetExhausted` if a budget cannot hold it."""
        totals: dict[str, int] = {}
        for outcome in outcomes:
            if any(e.type == E.APPROVED for e in outcome.events):
                programme_id = outcome.application.programme_id
                amount = outcome.application.approved_amount or 0
                totals[programme_id] = totals.get(programme_id, 0) + amount
        for programme_id, amount in sorted(totals.items()):
            if not await budgets.hold(uow, programme_id, amount):
                raise BudgetExhausted(
                    f"the programme budget cannot hold {amount} won; nothing was approved",
                    amount=amount,
                )

    async def request_redemption(
        self,
        uow: UnitOfWork,
        voucher_id: str,
        *,
        provider_id: str,
        invoice_number: str,
        amount: int,
        service_category: str,
        context: EventContext,
    ) -> tuple[Outcome[Application], str]:
        application_id = await projection.application_for_voucher(uow.connection, voucher_id)
        if application_id is None:
            raise NotFound(f"there is no voucher {voucher_id}")
        categories = await projection.provider_categories(uow, provider_id)
        if categories is None:
            raise Unprocessable(f"provider {provider_id} is not registered", field="provider_id")
        if await projection.invoice_taken(uow, provider_id, invoice_number):
            raise DuplicateInvoice(
                f"invoice {invoice_number} from {provider_id} was already submitted"
            )
        redemption_id = new_id("rdm")

        async def command(state: Application) -> RequestRedemption:
            return RequestRedemption(
                redemption_id=redemption_id,
                provider_id=provider_id,
                provider_categories=categories,
                invoice_number=invoice_number,
                amount=amount,
                service_category=service_category,
                programme=self.programme(state.programme_id),
                today=today_in_korea(self.clock.now()),
            )

        outcome = await self.execute(uow, application_id, command, context)
        redemption = outcome.application.redemption(redemption_id)
        assert redemption is not None
        await projection.save_redemption(uow, outcome.application, redemption)
        return outcome, redemption_id

    async def register_provider(
        self,
        uow: UnitOfWork,
        provider_id: str,
        name: str,
        categories: list[str],
        context: EventContext,
    ) -> None:
        """Providers are reference data, but their registration is evidence too: it is an event."""
        try:
            await uow.append(
                f"provider:{provider_id}",
                StreamVersion(),
                [
                    ProviderRegistered(
                        provider_id=provider_id, name=name, service_categories=categories
                    ).event()
                ],
                context,
            )
        except ConcurrencyConflict as error:
            raise DuplicateProvider(f"provider {provider_id} is already registered") from error
        await projection.save_provider(uow, provider_id, name, categories, context.actor.sub)

    # --- policies: what the service does on its own ------------------------------------

    async def when_applications_submitted_verify(
        self, uow: UnitOfWork, events: Sequence[Envelope]
    ) -> None:
        """Verify submitted applications, together: one read of the firms' other applications
        and one ask of the support read model for all of them."""
        book = projection.FirmBook()
        await book.load(uow, {e.firm_id for e in events if e.firm_id})
        wanted = list(dict.fromkeys(_support_key(e) for e in events))
        support = dict(zip(wanted, await self.support.facts(uow, wanted), strict=True))

        async def support_for(key: SupportKey) -> SupportFacts:
            if key not in support:  # the event did not say what its application says
                [support[key]] = await self.support.facts(uow, [key])
            return support[key]

        async def command(state: Application) -> VerifyApplication | None:
            if state.status is not Status.SUBMITTED:
                return None  # already verified, or withdrawn meanwhile
            await book.load(uow, {state.firm_id})  # an event without its firm id
            today = today_in_korea(state.created_at)  # as of the submission, however late
            return VerifyApplication(
                programme=self.programmes.get(state.programme_id),
                today=today,
                held_in_programme=book.held(state.firm_id, state.programme_id, state.id),
                other_open_application=book.other_open(state.firm_id, state.programme_id, state.id),
                support=await support_for((state.firm_id, today.year, state.cost_reference)),
            )

        await self.execute_many(
            uow,
            [Step(e.aggregate_id, command, caused_by(e, VERIFIER)) for e in events],
            after_each=book.note,
        )

    async def when_applications_approved_issue_vouchers(
        self, uow: UnitOfWork, events: Sequence[Envelope]
    ) -> None:
        """Issue the voucher of each approved application, once, unless the support limits,
        checked again now under the firms' locks (a voucher counts in its year of issue), are
        passed since it was verified: it is then rejected at stage ``issue`` and its
        programme's budget gets back what the approval held."""
        now = self.clock.now()
        today = today_in_korea(now)
        gate = await self.support.gate(uow, {e.firm_id for e in events if e.firm_id}, now)

        def issue(state: Application) -> IssueVoucher | RefuseGrant:
            refusal = gate.admit(
                application_id=state.id,
                firm_id=state.firm_id,
                year=today.year,
                cost_reference=state.cost_reference,
                amount=state.approved_amount or 0,
            )
            if refusal is not None:
                return refusal
            programme = self.programme(state.programme_id)
            return IssueVoucher(voucher_id=new_id("vch"), programme=programme, today=today)

        outcomes = await self.react(uow, events, ISSUER, issue, only_in=Status.APPROVED)
        await self.support.record_grants(uow, [e for o in outcomes for e in o.events])
        for outcome in outcomes:
            refused = outcome.application
            if outcome.events and refused.status is Status.REJECTED and refused.approved_amount:
                await budgets.release(uow, refused.programme_id, refused.approved_amount)

    async def when_redemption_requested_pay(self, uow: UnitOfWork, event: Envelope) -> None:
        """Pay the redemption: the ledger in this transaction; a treasury is paid by the
        payout worker (:meth:`pay_due`), outside any command's transaction."""
        redemption_id = str(event.payload["redemption_id"])
        if not self.payouts.in_database:
            self.payouts_due.set()
            return

        async def command(state: Application) -> PayRedemption | None:
            redemption = state.redemption(redemption_id)
            if redemption is None or redemption.status == "paid" or state.voucher is None:
                return None  # paid already: paying again must change nothing
            receipt = await self.payouts.pay(
                uow,
                PayoutOrder(
                    payout_id=f"po-{redemption_id}",
                    reference=redemption_id,
                    payer=f"programme:{state.programme_id}",
                    payee=f"provider:{redemption.provider_id}",
                    amount=redemption.amount,
                ),
            )
            return PayRedemption(redemption_id=redemption_id, payout_id=receipt.payout_id)

        outcome = await self.execute(
            uow, event.aggregate_id, command, caused_by(event, PAYOUT_STAGE)
        )
        paid = outcome.application.redemption(redemption_id)
        if outcome.events and paid is not None:
            await projection.save_redemption(uow, outcome.application, paid)

    # --- payouts over the network ---------------------------------------------------------

    def payout_order(self, state: Application, redemption: Redemption) -> PayoutOrder:
        return PayoutOrder(
            payout_id=f"po-{redemption.id}",
            reference=redemption.id,
            payer=f"programme:{state.programme_id}",
            payee=f"provider:{redemption.provider_id}",
            amount=redemption.amount,
        )

    async def pay_due(self) -> int:
        """One attempt at each payout that is due (requested, its back-off over), each
        outside any command's transaction; a payout that failed ``max_payout_attempts``
        times becomes ``payout_failed``. Returns how many were paid."""
        attempts = self.attempts
        if attempts is None:
            return 0
        async with self.store.engine.connect() as connection:
            due = await projection.requested_redemptions(connection)
        paid = 0
        for application_id, redemption_id in due:
            state = self.decider.fold(await self.store.read_stream(application_id))
            redemption = state.redemption(redemption_id) if state is not None else None
            if state is None or redemption is None or redemption.status != "requested":
                continue
            order = self.payout_order(state, redemption)
            attempted = await attempts.attempt(order)
            if attempted is None:
                continue  # not due yet, or another replica is trying it
            context = EventContext(actor=PAYOUT_STAGE, correlation_id=f"payout:{redemption_id}")
            if attempted.receipt is not None:
                command: Any = PayRedemption(redemption_id, attempted.receipt.payout_id)
                paid += 1
            elif attempted.failures >= self.max_payout_attempts:
                command = FailPayout(
                    redemption_id, order.payout_id, attempted.failures, attempted.error or ""
                )
            else:
                continue
            await self._record_payout(application_id, redemption_id, command, context)
        return paid

    async def _record_payout(
        self, application_id: str, redemption_id: str, command: Any, context: EventContext
    ) -> Outcome[Application]:
        async def work(uow: UnitOfWork) -> Outcome[Application]:
            outcome = await self.execute(uow, application_id, command, context)
            changed = outcome.application.redemption(redemption_id)
            if outcome.events and changed is not None:
                await projection.save_redemption(uow, outcome.application, changed, new=False)
            return outcome

        return await self.in_transaction(work)

    async def retry_payout(
        self, voucher_id: str, redemption_id: str, officer: str, reason: str, context: EventContext
    ) -> Redemption:
        """An officer has a failed payout tried again (its failures counted afresh)."""
        application_id = await self._voucher_application(voucher_id)
        command = RetryPayout(redemption_id=redemption_id, officer=officer, reason=reason)
        state = self.decider.fold(await self.store.read_stream(application_id))
        failed = state.redemption(redemption_id) if state is not None else None
        if self.attempts is not None and failed is not None and failed.status == "payout_failed":
            # before it is requested again (the worker may look at once): counted from 0
            await self.attempts.forget(f"po-{redemption_id}")
        outcome = await self._record_payout(application_id, redemption_id, command, context)
        self.payouts_due.set()
        found = outcome.application.redemption(redemption_id)
        assert found is not None
        return found

    async def cancel_redemption(
        self, voucher_id: str, redemption_id: str, officer: str, reason: str, context: EventContext
    ) -> Redemption:
        """An officer cancels a redemption whose payout failed: its amount goes back on the
        voucher. Under the payout's lock (no attempt under way), the gateway is asked first:
        a payout it made after all is recorded as paid instead, never given back."""
        application_id = await self._voucher_application(voucher_id)
        payout_id = f"po-{redemption_id}"
        guard = (
            self.attempts.lock(payout_id)
            if self.attempts is not None
            else contextlib.nullcontext(True)
        )
        async with guard:
            made = None
            if not self.payouts.in_database:
                try:
                    made = await self.payouts.find(None, payout_id)
                except TreasuryError as error:
                    raise PayoutUnknown(
                        f"the treasury cannot say now whether it paid {payout_id}: {error};"
                        " nothing was changed"
                    ) from error
            command: Any = CancelRedemption(redemption_id, officer, reason)
            if made is not None:
                command = PayRedemption(redemption_id, made.payout_id)
            outcome = await self._record_payout(application_id, redemption_id, command, context)
        found = outcome.application.redemption(redemption_id)
        assert found is not None
        if made is not None:
            raise PaidAfterAll(
                f"the treasury paid {payout_id} after all: redemption {redemption_id} is paid",
                current_status=found.status,
            )
        return found

    async def _voucher_application(self, voucher_id: str) -> str:
        async with self.store.engine.connect() as connection:
            found = await projection.application_for_voucher(connection, voucher_id)
        if found is None:
            raise NotFound(f"there is no voucher {voucher_id}")
        return str(found)

    async def expire_due_vouchers(self) -> int:
        """Expire every issued voucher past its date; the unspent rest goes back to the budget."""
        today = today_in_korea(self.clock.now())
        async with self.store.engine.connect() as connection:
            due = await projection.due_for_expiry(connection, today)
        expired = 0
        for application_id in due:

            async def expire(uow: UnitOfWork, application_id: str = application_id) -> bool:
                try:
                    outcome = await self.execute(
                        uow,
                        application_id,
                        ExpireVoucher(today=today),
                        EventContext(actor=EXPIRY, correlation_id=new_id("expiry")),
                    )
                except InvalidTransition:
                    return False  # closed or expired meanwhile
                returned = outcome.application.returned_amount
                if returned:
                    await budgets.release(uow, outcome.application.programme_id, returned)
                return True

            expired += await self.in_transaction(expire)
        return expired


__all__ = ["DuplicateProvider", "VoucherService"]
