"""Cross-programme support limits: one cost is supported once, by one programme, and a firm's
combined support in a year stays under a cap. Pure: the rules and the shared grant contract.

A *grant* is the moment a programme commits money to a firm: a voucher issued, a credit
certified, a fund investment committed. Each grant event carries the firm, the amount,
the year it counts in, its programme and the cost it covers (``cost_reference``). Every
programme service keeps a read model of all three programmes' grants (fed from their
topics) and checks it at verification, and again as it grants (:class:`RefuseGrant`): its
own grants are in the read model as soon as they are made, another programme's once their
events arrive. Two programmes granting to one firm within that moment may both grant; a
detector then records the overlap as ``support.conflict.detected``, naming both
applications, for officers to settle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import Field

from shared.contracts import Envelope
from shared.domain.decisions import Reason, today_in_korea
from shared.domain.events import EventPayload, Part

MAX_WON = 2**53 - 1
Won = Annotated[int, Field(ge=0, le=MAX_WON)]

PROGRAMMES = ("voucher", "taxcredit", "fund")
"""The programmes whose grants count together, by the name their service and topic carry."""


class SupportPolicy(Part):
    """The programme policy in force: how much support a firm may receive in a year."""

    version: str = Field(min_length=1)
    combined_yearly_cap: Won
    """The most, in won, one firm may be granted in a year across every programme."""
    currency: Literal["KRW"] = "KRW"
    assumption: str = Field(min_length=1)
    """Why the cap is what it is: the plan sets none, so the figure is an assumption."""


def load_support_policy(document: Mapping[str, Any]) -> SupportPolicy:
    return SupportPolicy.model_validate(
        {k: v for k, v in document.items() if k in SupportPolicy.model_fields}
    )


# --- the grant contract every programme's events keep --------------------------------------


class Grant(NamedTuple):
    """What a grant event says, as every programme reads it."""

    programme: str
    application_id: str
    firm_id: str
    amount: int
    year: int
    cost_reference: str | None
    event_id: str
    granted_at: datetime


class GiveBack(NamedTuple):
    """Money of a grant that went back (a clawback, a cancellation, an expiry)."""

    programme: str
    application_id: str
    amount: int


GRANT_EVENTS: Mapping[str, tuple[str, str]] = {
    "voucher.voucher.issued": ("voucher", "year"),
    "taxcredit.certificate.issued": ("taxcredit", "tax_year"),
    "fund.investment.committed": ("fund", "year"),
}
"""Grant event types: their programme, and the payload member naming the year they count in."""

GIVE_BACK_EVENTS: Mapping[str, tuple[str, str]] = {
    "voucher.voucher.expired": ("voucher", "returned_amount"),
    "taxcredit.certificate.clawed_back": ("taxcredit", "amount"),
    "fund.investment.cancelled": ("fund", "returned_amount"),
}
"""Events that give part of a grant back: their programme, and the member with the amount."""


def grant_of(event: Envelope) -> Grant | None:
    """The grant ``event`` records, or None if it records none. An older event without the
    grant members counts under its owner, in the Korean year it happened, for no cost."""
    known = GRANT_EVENTS.get(event.type)
    if known is None:
        return None
    programme, year_member = known
    payload = event.payload
    year = payload.get(year_member)
    return Grant(
        programme=programme,
        application_id=event.aggregate_id,
        firm_id=str(payload.get("firm_id") or event.firm_id or ""),
        amount=int(payload["amount"]),
        year=int(year) if year is not None else today_in_korea(event.occurred_at).year,
        cost_reference=payload.get("cost_reference") or None,
        event_id=event.event_id,
        granted_at=event.occurred_at,
    )


def give_back_of(event: Envelope) -> GiveBack | None:
    known = GIVE_BACK_EVENTS.get(event.type)
    if known is None:
        return None
    programme, member = known
    amount = int(event.payload.get(member) or 0)
    return GiveBack(programme, event.aggregate_id, amount) if amount > 0 else None


# --- checking an application at verification --------------------------------------------------


class SupportFacts(Part):
    """What a verification compared against the other programmes' grants (recorded in its
    facts, so an auditor can redo the check)."""

    policy_version: str
    year: int
    """The year the application's support would count in."""
    cost_reference: str | None
    supported_elsewhere: str | None = None
    """Another application already granted for the same cost (in any programme, this one
    too), as ``"<programme> application <id>"``."""
    combined_support: Won = 0
    """What the firm was already granted in ``year`` across programmes (net of give-backs)."""
    combined_yearly_cap: Won


def support_failures(facts: SupportFacts | None, amount: int) -> list[Reason]:
    """``duplicate_support`` and ``combined_cap_exceeded``, for an application of ``amount`` won."""
    if facts is None:
        return []
    reasons = []
    if facts.supported_elsewhere is not None:
        reasons.append(
            Reason(
                "duplicate_support",
                f"cost {facts.cost_reference!r} is already supported by "
                f"{facts.supported_elsewhere}",
            )
        )
    combined = facts.combined_support + amount
    if combined > facts.combined_yearly_cap:
        reasons.append(
            Reason(
                "combined_cap_exceeded",
                f"the firm was granted {facts.combined_support} won in {facts.year} across "
                f"programmes; {amount} won more makes {combined} won, over the combined yearly "
                f"cap of {facts.combined_yearly_cap} won",
            )
        )
    return reasons


# --- checking again at the grant ---------------------------------------------------------------


class RefuseGrant(NamedTuple):
    """A grant stage refuses an approved application: checked again as the grant is made, the
    support limits are passed (another grant was made since the application was verified).
    Each programme's decider turns it into its rejection at its grant stage."""

    reasons: tuple[Reason, ...]
    support: SupportFacts


def facts_among(
    grants: Sequence[Grant],
    *,
    firm_id: str,
    year: int,
    cost_reference: str | None,
    policy: SupportPolicy,
) -> SupportFacts:
    """The support facts of a firm's application among ``grants`` (what each still stands for,
    net of give-backs): what :meth:`SupportBook.facts` answers from the read model, here from
    grants in hand."""
    standing = sorted((g for g in grants if g.firm_id == firm_id and g.amount > 0), key=_order)
    holder = next(
        (g for g in standing if cost_reference and g.cost_reference == cost_reference), None
    )
    return SupportFacts(
        policy_version=policy.version,
        year=year,
        cost_reference=cost_reference,
        supported_elsewhere=(
            f"{holder.programme} application {holder.application_id}" if holder else None
        ),
        combined_support=sum(g.amount for g in standing if g.year == year),
        combined_yearly_cap=policy.combined_yearly_cap,
    )


def refusal_at_grant(facts: SupportFacts, amount: int) -> RefuseGrant | None:
    """The refusal of a grant of ``amount`` won that ``facts`` show, or None: it may be made."""
    reasons = support_failures(facts, amount)
    return RefuseGrant(tuple(reasons), facts) if reasons else None


# --- finding overlaps afterwards --------------------------------------------------------------


class GrantRef(Part):
    programme: str
    application_id: str
    amount: Won
    event_id: str
    granted_at: datetime


class SupportConflictDetected(EventPayload):
    """Two programmes granted the same cost, or a firm's grants in a year passed the cap,
    because each decided before it saw the other's grant. Officers settle it."""

    event_type: ClassVar[str] = "support.conflict.detected"

    kind: Literal["duplicate_support", "combined_cap_exceeded"]
    firm_id: str
    year: int
    cost_reference: str | None = None
    combined_yearly_cap: Won
    applications: tuple[GrantRef, ...] = Field(min_length=2)
    """The grants in conflict, oldest first; the last one is the detecting programme's."""
    detected_by: str


def _order(grant: Grant) -> tuple[datetime, str]:
    return (grant.granted_at, grant.event_id)


def _ref(grant: Grant) -> GrantRef:
    return GrantRef(
        programme=grant.programme,
        application_id=grant.application_id,
        amount=grant.amount,
        event_id=grant.event_id,
        granted_at=grant.granted_at,
    )


def conflicts_of(
    grant: Grant,
    known: Sequence[Grant],
    *,
    programme: str,
    cap: int,
) -> list[tuple[str, SupportConflictDetected]]:
    """The conflicts that ``grant`` (just seen) shows, among the firm's ``known`` grants of
    its year and those sharing its cost; each as ``(key, event)``, ``key`` naming the
    conflict so that it is recorded once.

    Exactly one programme reports a conflict, whichever order the services see the grants
    in: the programme of its later grant. A programme sees its own grants and everyone
    else's, so it reports when the later grant is its own. For the cap, each grant that
    takes (or keeps) the firm's running total for the year over the cap is a conflict of
    its own, reported by its programme, naming it and the grants before it.
    """
    found: list[tuple[str, SupportConflictDetected]] = []
    everything = sorted({g.event_id: g for g in (*known, grant)}.values(), key=_order)
    if grant.cost_reference is not None:
        sharing = [  # a cost is the firm's own: the same string of another firm is another cost
            g
            for g in everything
            if g.cost_reference == grant.cost_reference
            and g.firm_id == grant.firm_id
            and g.event_id != grant.event_id
        ]
        for other in sharing:
            first, second = sorted((other, grant), key=_order)
            if second.programme != programme:
                continue
            key = f"duplicate:{first.event_id}:{second.event_id}"
            found.append(
                (
                    key,
                    SupportConflictDetected(
                        kind="duplicate_support",
                        firm_id=second.firm_id,
                        year=second.year,
                        cost_reference=grant.cost_reference,
                        combined_yearly_cap=cap,
                        applications=(_ref(first), _ref(second)),
                        detected_by=programme,
                    ),
                )
            )
    in_year = [g for g in everything if g.firm_id == grant.firm_id and g.year == grant.year]
    running = 0
    for index, g in enumerate(in_year):
        running += g.amount
        if running > cap and index > 0 and g.programme == programme:
            # every grant made with the firm over the cap is one conflict, keyed by the
            # grant: learning of more earlier grants only raises the running total, so a
            # grant once over stays over and its report never needs taking back
            event = SupportConflictDetected(
                kind="combined_cap_exceeded",
                firm_id=g.firm_id,
                year=g.year,
                combined_yearly_cap=cap,
                applications=tuple(_ref(x) for x in in_year[: index + 1]),
                detected_by=programme,
            )
            found.append((f"cap:{g.event_id}", event))
    return found


__all__ = [
    "GIVE_BACK_EVENTS",
    "GRANT_EVENTS",
    "PROGRAMMES",
    "GiveBack",
    "Grant",
    "GrantRef",
    "RefuseGrant",
    "SupportConflictDetected",
    "SupportFacts",
    "SupportPolicy",
    "conflicts_of",
    "facts_among",
    "give_back_of",
    "grant_of",
    "load_support_policy",
    "refusal_at_grant",
    "support_failures",
]
