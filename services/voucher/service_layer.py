"""Use cases of the voucher service: load the application, decide, append, project, in one transaction.

HTTP routes and Kafka consumers both end up here; neither holds a rule of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from services.voucher.adapters import projection
from services.voucher.adapters.payouts import PayoutGateway, PayoutOrder, payout_id_for
from services.voucher.domain.decider import (
    DecideApplication,
    ExpireVoucher,
    IssueVoucher,
    PayRedemption,
    RequestRedemption,
    SubmitApplication,
    VerifyApplication,
    WithdrawApplication,
    decide,
    today_in_korea,
)
from services.voucher.domain.errors import (
    BudgetExhausted,
    DuplicateInvoice,
    InvalidTransition,
    NotFound,
    Unprocessable,
    VoucherError,
)
from services.voucher.domain.model import Application, E, Status, evolve, fold
from services.voucher.domain.programmes import Programme
from shared.batching import GroupCommit
from shared.clock import Clock
from shared.contracts import Actor, Envelope, NewEvent, Role
from shared.eventstore import (
    ConcurrencyConflict,
    EventContext,
    EventStore,
    StreamVersion,
    UnitOfWork,
    is_unique_violation,
)
from shared.idempotency import StoredResponse, remember_many, replay_many

VERIFIER = Actor(sub="voucher-verifier", role=Role.SYSTEM)
PAYOUT_STAGE = Actor(sub="voucher-payout", role=Role.SYSTEM)
EXPIRY = Actor(sub="voucher-expiry", role=Role.SYSTEM)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Step:
    """One command for :meth:`VoucherService.execute_many`."""

    application_id: str
    command: Any
    """A command, or an async function of the application's state returning one (or None)."""
    context: EventContext


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """A command from an HTTP request, with what its answer depends on."""

    principal: str
    """Who asked (the token's subject): Idempotency-Keys are theirs."""
    key: str | None
    fingerprint: str
    """The request's method, path and body, hashed: a reused key must match it."""
    step: Step
    status_code: int = 200


@dataclass(frozen=True, slots=True)
class Outcome:
    """An application after a command, and the events the command appended."""

    application: Application
    events: list[Envelope]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class VoucherService:
    def __init__(
        self,
        store: EventStore,
        programmes: dict[str, Programme],
        payouts: PayoutGateway,
        clock: Clock,
    ) -> None:
        self.store = store
        self.programmes = programmes
        self.payouts = payouts
        self.clock = clock
        self.submissions = self.group_commit("submissions", fresh=True)
        self.decisions = self.group_commit("decisions")

    # --- the shared path of every command ---------------------------------------------

    async def execute(
        self,
        uow: UnitOfWork,
        application_id: str,
        command: Any,
        context: EventContext,
        *,
        fresh: bool = False,
    ) -> Outcome:
        """Decide ``command`` against the application's log and record the outcome in ``uow``.

        ``command`` is a command, or an async function of the application's current state
        (read once, under the row lock) that returns one, or ``None`` for nothing to do.
        ``fresh``: the id was minted for this command, so there is no history to read (a
        clash would still be caught by the store's version check).
        """
        [outcome] = await self.execute_many(
            uow, [Step(application_id, command, context)], fresh=fresh
        )
        return outcome

    async def execute_many(
        self,
        uow: UnitOfWork,
        steps: Sequence[Step],
        *,
        fresh: bool = False,
        after_each: Callable[[Application], None] | None = None,
    ) -> list[Outcome]:
        """:meth:`execute` for several commands in one transaction, in their order.

        The applications are locked and read together, the events and rows written
        together: a few round trips for the whole lot instead of a few per command.
        A later step sees what the earlier ones did (also to the same application);
        ``after_each`` hears of every application a step changed.
        """
        outcomes = await self._run_steps(uow, steps, fresh=fresh, after_each=after_each)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
        return [outcome for outcome in outcomes if isinstance(outcome, Outcome)]

    async def _run_steps(
        self,
        uow: UnitOfWork,
        steps: Sequence[Step],
        *,
        fresh: bool = False,
        after_each: Callable[[Application], None] | None = None,
        isolate: bool = False,
    ) -> list[Outcome | VoucherError]:
        """The work of :meth:`execute_many`. ``isolate``: a step refused by the rules gets
        its error as its result and changes nothing, and the steps after it go on (its
        events were only sealed, not written: writes come last, for all steps at once)."""
        ids = list(dict.fromkeys(step.application_id for step in steps))
        if fresh:
            histories: dict[str, list[Envelope]] = {i: [] for i in ids}
        else:
            # commands on one application queue here instead of failing on the version check
            await projection.lock_applications(uow, ids)
            histories = await uow.read_streams(ids)
        states = {i: fold(history) for i, history in histories.items()}
        versions = {i: StreamVersion.after(history) for i, history in histories.items()}
        outcomes: list[Outcome | VoucherError] = []
        sealed: list[Envelope] = []
        for step in steps:
            state = states[step.application_id]
            try:
                if state is None and not fresh:
                    raise NotFound(f"there is no application {step.application_id}")
                command = step.command
                if callable(command):
                    assert state is not None
                    command = await command(state)
                    if command is None:
                        outcomes.append(Outcome(state, []))
                        continue
                new_events = decide(command, state)
            except VoucherError as error:
                if not isolate:
                    raise
                outcomes.append(error)
                continue
            appended = uow.seal(
                step.application_id,
                versions[step.application_id],
                new_events,
                _with_owner(step.context, state),
            )
            for event in appended:
                state = evolve(state, event)
            if state is None:  # nothing was decided for an application that does not exist
                raise NotFound(f"there is no application {step.application_id}")
            if appended:
                states[step.application_id] = state
                versions[step.application_id] = StreamVersion.after(appended)
                sealed.extend(appended)
                if after_each is not None:
                    after_each(state)
            outcomes.append(Outcome(state, appended))
        await uow.insert(sealed)
        changed = [
            state
            for i, state in states.items()
            if state is not None and versions[i] != StreamVersion.after(histories[i])
        ]
        await projection.save_applications(
            uow, changed, new={app.id for app in changed if not histories[app.id]}
        )
        return outcomes

    async def in_transaction(
        self, work: Callable[[UnitOfWork], Awaitable[T]], attempts: int = 5
    ) -> T:
        """Run ``work`` in its own transaction, again from scratch if another writer got there first."""
        for attempt in range(attempts):
            try:
                async with self.store.transaction() as uow:
                    return await work(uow)
            except ConcurrencyConflict:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def programme(self, programme_id: str) -> Programme:
        found = self.programmes.get(programme_id)
        if found is None:
            raise NotFound(f"there is no programme {programme_id}")
        return found

    # --- commands from people ----------------------------------------------------------

    async def submit(
        self,
        uow: UnitOfWork,
        application_id: str,
        command: SubmitApplication,
        context: EventContext,
    ) -> Outcome:
        return await self.execute(
            uow, application_id, self.submission(command), context, fresh=True
        )

    def submission(self, command: SubmitApplication) -> SubmitApplication:
        """``command``, once its programme is known to exist (422 naming the field if not)."""
        if command.programme_id not in self.programmes:
            raise Unprocessable(
                f"there is no programme {command.programme_id!r}", field="programme_id"
            )
        return command

    async def decide_application(
        self,
        uow: UnitOfWork,
        application_id: str,
        *,
        decision: str,
        reason: str,
        approved_amount: int | None,
        context: EventContext,
    ) -> Outcome:
        step = self.decision(
            application_id,
            decision=decision,
            reason=reason,
            approved_amount=approved_amount,
            context=context,
        )
        outcome = await self.execute(uow, step.application_id, step.command, step.context)
        await self.hold_budgets(uow, [outcome])
        return outcome

    def decision(
        self,
        application_id: str,
        *,
        decision: str,
        reason: str,
        approved_amount: int | None,
        context: EventContext,
    ) -> Step:
        """An officer's decision; an approval must then hold its budget (:meth:`hold_budgets`)."""

        async def command(state: Application) -> DecideApplication:
            return DecideApplication(
                officer=context.actor.sub,
                decision=decision,
                reason=reason,
                programme=self.programme(state.programme_id),
                approved_amount=approved_amount,
            )

        return Step(application_id, command, context)

    async def hold_budgets(self, uow: UnitOfWork, outcomes: Sequence[Outcome]) -> None:
        """Take what the approvals among ``outcomes`` granted from their programmes' budgets,
        one statement per programme; :class:`BudgetExhausted` if a budget cannot hold it."""
        totals: dict[str, int] = {}
        for outcome in outcomes:
            if any(e.type == E.APPROVED for e in outcome.events):
                programme_id = outcome.application.programme_id
                amount = outcome.application.approved_amount or 0
                totals[programme_id] = totals.get(programme_id, 0) + amount
        for programme_id, amount in sorted(totals.items()):
            if not await projection.hold_budget(uow, programme_id, amount):
                raise BudgetExhausted(
                    f"the programme budget cannot hold {amount} won; nothing was approved",
                    amount=amount,
                )

    # --- the same commands, from many requests at once ----------------------------------

    async def answer(
        self, uow: UnitOfWork, requests: Sequence[CommandRequest], *, fresh: bool = False
    ) -> list[StoredResponse | Exception]:
        """Run the requests' commands in ``uow``, in order, each answered as if alone.

        A repeated Idempotency-Key gets its recorded answer; a command the rules refuse
        gets its error and writes nothing. Raises (and the caller must roll back and run
        the requests one by one) if something beyond one request's own rules fails: a
        budget that cannot hold all approvals together, a key or version taken meanwhile.
        """
        results: list[StoredResponse | Exception | None] = [None] * len(requests)
        keyed = [(i, r.principal, r.key, r.fingerprint) for i, r in enumerate(requests) if r.key]
        replays = await replay_many(uow, [(p, k, f) for _, p, k, f in keyed])
        for (i, *_), replayed in zip(keyed, replays, strict=True):
            results[i] = replayed
        todo = [i for i, result in enumerate(results) if result is None]
        outcomes = await self._run_steps(
            uow, [requests[i].step for i in todo], fresh=fresh, isolate=True
        )
        await self.hold_budgets(uow, [o for o in outcomes if isinstance(o, Outcome)])
        remembered: list[tuple[str, str, str, StoredResponse]] = []
        for i, outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, Exception):
                results[i] = outcome
                continue
            request = requests[i]
            response = StoredResponse(
                request.status_code, projection.application_resource(outcome.application)
            )
            results[i] = response
            if request.key:
                remembered.append((request.principal, request.key, request.fingerprint, response))
        await remember_many(uow, remembered)
        return [result for result in results if result is not None]

    def group_commit(
        self, name: str, *, fresh: bool = False
    ) -> GroupCommit[CommandRequest, StoredResponse]:
        """Requests that arrive together share a transaction (see :mod:`shared.batching`)."""

        async def together(requests: Sequence[CommandRequest]) -> list[StoredResponse | Exception]:
            async def work(uow: UnitOfWork) -> list[StoredResponse | Exception]:
                return await self.answer(uow, requests, fresh=fresh)

            return await self.in_transaction(work, attempts=1)

        async def alone(request: CommandRequest) -> StoredResponse:
            async def work(uow: UnitOfWork) -> StoredResponse:
                [result] = await self.answer(uow, [request], fresh=fresh)
                if isinstance(result, Exception):
                    raise result
                return result

            try:
                return await self.in_transaction(work)
            except Exception as error:
                if not request.key or not is_unique_violation(error):
                    raise
                # the same key raced us and won: answer with what it recorded
                return await self.in_transaction(work)

        return GroupCommit(name, together, alone)

    async def withdraw(
        self, uow: UnitOfWork, application_id: str, reason: str, context: EventContext
    ) -> Outcome:
        return await self.execute(uow, application_id, WithdrawApplication(reason), context)

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
    ) -> tuple[Outcome, str]:
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
                    NewEvent(
                        type="voucher.provider.registered",
                        payload={
                            "provider_id": provider_id,
                            "name": name,
                            "service_categories": categories,
                        },
                    )
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
        """Verify submitted applications, together: one read of the firms' other applications."""
        book = projection.FirmBook()
        await book.load(uow, {e.firm_id for e in events if e.firm_id})
        today = today_in_korea(self.clock.now())

        async def command(state: Application) -> VerifyApplication | None:
            if state.status is not Status.SUBMITTED:
                return None  # already verified, or withdrawn meanwhile
            await book.load(uow, {state.firm_id})  # an event without its firm id
            return VerifyApplication(
                programme=self.programmes.get(state.programme_id),
                today=today,
                held_in_programme=book.held(state.firm_id, state.programme_id, state.id),
                other_open_application=book.other_open(state.firm_id, state.programme_id, state.id),
            )

        await self.execute_many(
            uow,
            [Step(e.aggregate_id, command, _caused_by(e, VERIFIER)) for e in events],
            after_each=book.note,
        )

    async def when_applications_approved_issue_vouchers(
        self, uow: UnitOfWork, events: Sequence[Envelope]
    ) -> None:
        today = today_in_korea(self.clock.now())

        async def command(state: Application) -> IssueVoucher | None:
            if state.status is not Status.APPROVED:
                return None  # issued already
            return IssueVoucher(
                voucher_id=new_id("vch"),
                programme=self.programme(state.programme_id),
                today=today,
            )

        await self.execute_many(
            uow, [Step(e.aggregate_id, command, _caused_by(e, PAYOUT_STAGE)) for e in events]
        )

    async def when_redemption_requested_pay(self, uow: UnitOfWork, event: Envelope) -> None:
        redemption_id = str(event.payload["redemption_id"])

        async def command(state: Application) -> PayRedemption | None:
            redemption = state.redemption(redemption_id)
            if redemption is None or redemption.status == "paid" or state.voucher is None:
                return None  # paid already: paying again must change nothing
            receipt = await self.payouts.pay(
                uow,
                PayoutOrder(
                    payout_id=payout_id_for(redemption_id),
                    redemption_id=redemption_id,
                    voucher_id=state.voucher.id,
                    programme_id=state.programme_id,
                    provider_id=redemption.provider_id,
                    amount=redemption.amount,
                ),
            )
            return PayRedemption(redemption_id=redemption_id, payout_id=receipt.payout_id)

        outcome = await self.execute(
            uow, event.aggregate_id, command, _caused_by(event, PAYOUT_STAGE)
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
                    await projection.release_budget(uow, outcome.application.programme_id, returned)
                return True

            expired += await self.in_transaction(expire)
        return expired


class DuplicateProvider(InvalidTransition):
    code = "duplicate_provider"


def _caused_by(event: Envelope, actor: Actor) -> EventContext:
    return EventContext(
        actor=actor,
        correlation_id=event.correlation_id,
        causation_id=event.event_id,
        firm_id=event.firm_id,
    )


def _with_owner(context: EventContext, state: Application | None) -> EventContext:
    """Every event of an application carries its owner's firm id, whoever caused it."""
    if state is None or context.firm_id == state.firm_id:
        return context
    return EventContext(
        actor=context.actor,
        correlation_id=context.correlation_id,
        causation_id=context.causation_id,
        firm_id=state.firm_id,
    )


__all__ = ["CommandRequest", "DuplicateProvider", "Outcome", "Step", "VoucherService"]
