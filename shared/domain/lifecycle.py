"""What every programme's applications go through: opened by a submission, checked, decided
by officers (four eyes), withdrawn; the payloads and steps of that life, written once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import Envelope
from shared.domain.decisions import Decision, Reason
from shared.domain.errors import InvalidTransition
from shared.domain.events import EventPayload
from shared.domain.firms import BUSINESS_NUMBER, Firm
from shared.domain.support import SupportFacts


class ReasonPayload(BaseModel):
    """A reason as events carry it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    message: str


class RejectionPayload(EventPayload):
    """Verification or an officer refused the application (a programme adds its facts), or
    its grant stage did (a programme adds that stage)."""

    schema_version: ClassVar[int] = 2

    stage: Literal["verification", "decision"]
    reasons: tuple[ReasonPayload, ...] = Field(min_length=1)
    officer: str | None = None
    support: SupportFacts | None = None
    """At a grant stage: what the support limits showed when the grant was refused."""

    @classmethod
    def of(cls, reasons: Sequence[Reason], **fields: Any) -> RejectionPayload:
        return cls(
            reasons=tuple(ReasonPayload(code=r.code, message=r.message) for r in reasons), **fields
        )


def rejection_v1_compared_no_support(payload: dict[str, Any]) -> dict[str, Any]:
    """The upcaster of every programme's rejection from version 1: nothing was refused at a
    grant stage then, so no rejection recorded support facts of its own."""
    return {**payload, "support": None}


class ApprovalPayload(EventPayload):
    """An officer's approval: the first of two under four eyes, or the one that approves."""

    officer: str
    amount: int = Field(ge=0)
    reason: str = ""


class WithdrawalPayload(EventPayload):
    """The firm withdrew its application before approval."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class OfficerDecides:
    """An officer approves or rejects a verified application."""

    officer: str
    decision: Decision
    reason: str


@dataclass(frozen=True, slots=True)
class Withdraw:
    """The firm withdraws its application before it is approved."""

    reason: str = ""


def opening(event: Envelope) -> dict[str, Any]:
    """The fields every application state takes from the event that opened it."""
    return {
        "id": event.aggregate_id,
        "firm_id": event.firm_id or "",
        "submitted_by": event.actor.sub,
        "created_at": event.occurred_at,
        "updated_at": event.occurred_at,
        "version": event.aggregate_seq,
        "last_hash": event.hash,
    }


class Chained(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def status(self) -> Any: ...


S = TypeVar("S", bound=Chained)


def advanced(state: S, event: Envelope) -> S:
    """``state`` moved on to ``event``: its time, version and the last link's hash."""
    return replace(  # type: ignore[type-var]
        state, updated_at=event.occurred_at, version=event.aggregate_seq, last_hash=event.hash
    )


def require_new(state: object | None) -> None:
    """A submission opens an application: there must be none yet under its id."""
    if state is not None:
        raise InvalidTransition("this application was already submitted")


def require_status(state: S | None, allowed: Any, action: str) -> S:
    """``state``, if it is in one of the ``allowed`` statuses; else the transition is invalid."""
    if state is None:
        raise InvalidTransition(f"cannot {action} an application that does not exist")
    statuses = allowed if isinstance(allowed, tuple | frozenset | set) else (allowed,)
    if state.status not in statuses:
        raise InvalidTransition(
            f"cannot {action} an application that is {state.status}",
            current_status=str(state.status),
        )
    return state


def firm_identity_failures(firm: Firm, filed_by: str) -> list[Reason]:
    """The firm's business number must be well-formed and be the filing firm's own."""
    reasons: list[Reason] = []
    if not BUSINESS_NUMBER.fullmatch(firm.firm_id):
        reasons.append(
            Reason(
                "firm_id_malformed",
                f"business registration number {firm.firm_id!r} is not NNN-NN-NNNNN",
            )
        )
    if firm.firm_id != filed_by:
        reasons.append(
            Reason(
                "firm_id_mismatch",
                f"the application names firm {firm.firm_id} but was filed by firm {filed_by}",
            )
        )
    return reasons
