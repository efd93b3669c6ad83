"""Use cases of the taxcredit service, on the service kit: rate tables, verification with the
table in force and the cross-programme support limits, certificates and clawbacks, claims
opened for corporate co-investments. HTTP routes and consumer stages end up here."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from services.taxcredit.adapters import projection
from services.taxcredit.domain.decider import (
    DECIDER,
    ClawBack,
    DecideClaim,
    IssueCertificate,
    SubmitClaim,
    VerifyClaim,
)
from services.taxcredit.domain.events import (
    EVENTS,
    ClaimSubmitted,
    E,
    RateTablePublished,
    rate_table_aggregate,
)
from services.taxcredit.domain.model import Application, Status
from services.taxcredit.domain.rates import RateTable
from shared.clock import Clock
from shared.contracts import Actor, Envelope, Role
from shared.domain import Conflict, Decision, load_technologies, today_in_korea
from shared.domain.support import RefuseGrant, SupportFacts
from shared.eventstore import (
    NEW_STREAM,
    ConcurrencyConflict,
    EventContext,
    EventStore,
    UnitOfWork,
    is_unique_violation,
)
from shared.kit.application import ApplicationService, Outcome, Stages
from shared.kit.support import SupportBook


class VersionTaken(Conflict):
    code = "rate_table_version_taken"


VERIFIER, CERTIFIER = (
    Actor(sub=f"taxcredit-{stage}", role=Role.SYSTEM) for stage in ("verifier", "certificates")
)
"""The stages acting on their own, as their events record them."""


def claim_id(source: str, firm_id: str, reference: str) -> str:
    """The id of a claim a consumer opens: the same source, firm and reference give the same."""
    key = "\x00".join((source, firm_id, reference))
    return "tc_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def certificate_number(application: Application) -> str:
    """A certificate's number: from the hash of the approval it certifies (issuing again gives
    the same number; nobody can work it out before the approval exists)."""
    return f"TC-{application.tax_year}-{application.last_hash[:12].upper()}"


class TaxCreditService(ApplicationService[Application]):
    def __init__(
        self,
        store: EventStore,
        catalogue: Mapping[str, Any],
        clock: Clock,
        support: SupportBook | None = None,
    ) -> None:
        """``catalogue``: the strategic-technology catalogue claims are checked against;
        ``support``: every programme's grants, for the support limits (None: not checked)."""
        super().__init__(store, DECIDER, projection.PROJECTION, clock)
        self.technologies = load_technologies(catalogue)
        self.catalogue_version = str(catalogue["version"])
        self.tables = projection.TablesInForce()
        self.support = support

    def stages(self) -> Stages:
        """Verification and the certificate stage react to events on taxcredit.events."""
        return Stages(
            batches={
                E.SUBMITTED: self.when_applications_submitted_verify,
                E.APPROVED: self.when_applications_approved_issue_certificates,
            }
        )

    # --- commands from people ----------------------------------------------------------

    def decision(self, *, officer: str, decision: Decision, reason: str) -> DecideClaim:
        return DecideClaim(officer=officer, decision=decision, reason=reason)

    async def claw_back(
        self,
        uow: UnitOfWork,
        application_id: str,
        *,
        reason: str,
        amount: int | None,
        context: EventContext,
    ) -> Outcome[Application]:
        command = ClawBack(officer=context.actor.sub, reason=reason, amount=amount)
        return await self.execute(uow, application_id, command, context)

    async def publish_rate_table(
        self, uow: UnitOfWork, table: RateTable, context: EventContext
    ) -> dict[str, Any]:
        """Publish ``table``: an event on its own aggregate, then the table in force from now.

        A version is published once and never changes: a taken one is :class:`VersionTaken`.
        """
        event = RateTablePublished.model_validate(table.to_json()).event()
        try:
            [published] = await uow.append(
                rate_table_aggregate(table.version), NEW_STREAM, [event], context
            )
        except ConcurrencyConflict as error:
            raise VersionTaken(
                f"rate table {table.version} is published already; tables never change",
                field="version",
            ) from error
        return await projection.save_rate_table(uow, table, published)

    async def publish_once(self, table: RateTable, context: EventContext) -> bool:
        """Publish ``table`` unless its version is published (seeding; replicas race for it)."""

        async def work(uow: UnitOfWork) -> None:
            await self.publish_rate_table(uow, table, context)

        try:
            await self.in_transaction(work, attempts=1)
        except VersionTaken:
            return False
        except Exception as error:
            if not is_unique_violation(error):
                raise
            return False
        return True

    # --- what a command from a consumer may open ---------------------------------------

    async def open_claim(
        self, uow: UnitOfWork, source: str, command: SubmitClaim, context: EventContext
    ) -> Outcome[Application]:
        """Open a claim for a firm on a consumer's command (e.g. a corporate co-investment the
        fund service recorded); verification follows on its own, as for a firm's request.

        The claim's id comes from ``source`` and the claim's reference, so the same command
        delivered again finds the claim it opened and opens no other.
        """
        application_id = claim_id(source, command.firm.firm_id, command.inputs.claim_reference)
        history = (await uow.read_streams([application_id]))[application_id]
        if history:
            opened = self.decider.fold(history)
            assert opened is not None
            return Outcome(opened, [])
        return await self.submit(uow, application_id, command, context)

    # --- policies: what the service does on its own ------------------------------------

    async def when_applications_submitted_verify(
        self, uow: UnitOfWork, events: Sequence[Envelope]
    ) -> None:
        """Verify submitted claims together: one read of the tables, of the claimed references
        and of the support read model for them all."""
        tables = await self.tables.read(uow)
        claims = [(e, c) for e in events if isinstance(c := EVENTS.parse(e), ClaimSubmitted)]
        holders = await projection.claim_holders(
            uow, [(str(c.programme), c.claim.claim_reference) for _, c in claims]
        )
        support = await self.support_facts(uow, claims)

        def verify(state: Application) -> VerifyClaim:
            holder, firm = holders.get((str(state.programme), state.claim_reference), (None, None))
            return VerifyClaim(
                tables=tables,
                technologies=self.technologies,
                catalogue_version=self.catalogue_version,
                claimed_by=holder if holder != state.id else None,
                claimed_by_firm=firm,
                support=support.get(state.id),
            )

        def note(state: Application) -> None:
            key = (str(state.programme), state.claim_reference)
            if state.status is Status.VERIFIED and key not in holders:
                holders[key] = (state.id, state.firm_id)  # later ones in the batch see it taken

        await self.react(uow, events, VERIFIER, verify, only_in=Status.SUBMITTED, after_each=note)

    async def support_facts(
        self, uow: UnitOfWork, claims: Sequence[tuple[Envelope, ClaimSubmitted]]
    ) -> dict[str, SupportFacts]:
        """The support facts of each submitted claim, by application id, in one call to the
        book: the claim's owner, its tax year (a credit counts in its tax year) and its cost."""
        if self.support is None or not claims:
            return {}
        wanted = [
            (e.firm_id or "", c.tax_year, c.cost_reference or c.claim.claim_reference)
            for e, c in claims
        ]
        facts = await self.support.facts(uow, wanted)
        return {e.aggregate_id: f for (e, _), f in zip(claims, facts, strict=True)}

    async def when_applications_approved_issue_certificates(
        self, uow: UnitOfWork, events: Sequence[Envelope]
    ) -> None:
        """Issue the certificate of each approved claim, once (one issued already is passed over),
        unless the support limits, checked again now under the firms' locks, are passed since
        the claim was verified: the claim is then rejected at stage ``certification``."""
        now = self.clock.now()
        issued_on = today_in_korea(now)
        firms = {e.firm_id for e in events if e.firm_id}
        gate = None if self.support is None else await self.support.gate(uow, firms, now)

        def certify(state: Application) -> IssueCertificate | RefuseGrant:
            if gate is not None:
                refusal = gate.admit(
                    application_id=state.id,
                    firm_id=state.firm_id,
                    year=state.tax_year,  # a credit counts in its tax year
                    cost_reference=state.cost_reference,
                    amount=state.approved_amount or 0,
                )
                if refusal is not None:
                    return refusal
            return IssueCertificate(number=certificate_number(state), issued_on=issued_on)

        outcomes = await self.react(uow, events, CERTIFIER, certify, only_in=Status.APPROVED)
        if self.support is not None:
            await self.support.record_grants(uow, [e for o in outcomes for e in o.events])


__all__ = [
    "CERTIFIER",
    "VERIFIER",
    "TaxCreditService",
    "VersionTaken",
    "certificate_number",
    "claim_id",
]
