"""Use cases of the voucher service, on the service kit: what the voucher adds to every
programme's load-decide-append-project path is its budget, redemptions, providers and stages,
and the read model of every programme's grants its verification checks.

HTTP routes and Kafka consumers both end up here; neither holds a rule of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.voucher.adapters import projection
from services.voucher.adapters.tables import budgets
from services.voucher.domain.decider import (
    DECIDER,
    DecideApplication,
    ExpireVoucher,
    IssueVoucher,
    PayRedemption,
    RequestRedemption,
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
    Unprocessable,
)
from services.voucher.domain.events import E, ProviderRegistered
from services.voucher.domain.model import Application, Status
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
from shared.kit.payouts import PayoutGateway, PayoutOrder
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
    ) -> None:
        super().__init__(store, DECIDER, projection.PROJECTION, clock)
        self.programmes = programmes
        self.payouts = payouts
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
            singles={E.REDEMPTION_REQUESTED: self.when_redemption_requested_pay},
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
        redemption_id = str(event.payload["redemption_id"])

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
