"""Officers' decisions, four eyes, reasons, and the calendar programmes keep."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Literal

from shared.domain.errors import SameOfficer


class Decision(StrEnum):
    """What an officer decides on a verified application."""

    APPROVE = "approve"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Reason:
    """Why something was refused: a machine-readable code and a sentence for people."""

    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Approval:
    officer: str
    amount: int
    reason: str
    at: datetime


def officer_decision(
    *,
    decision: Decision,
    officer: str,
    submitted_by: str,
    approvals: Sequence[Approval],
    needs_two: bool,
) -> Literal["reject", "record", "approve"]:
    """What an officer's decision does, under four eyes.

    ``reject`` rejects; ``record`` records the first of two approvals; ``approve`` approves.
    Nobody decides an application they submitted, and the second approval must come
    from another officer than the first.
    """
    if officer == submitted_by:
        raise SameOfficer("the submitter of an application cannot decide it")
    if decision is Decision.REJECT:
        return "reject"
    if any(a.officer == officer for a in approvals):
        raise SameOfficer(
            f"officer {officer} already approved; a second officer must approve",
            approvals=len(approvals),
        )
    return "record" if needs_two and not approvals else "approve"


KST = timezone(timedelta(hours=9), "KST")


def today_in_korea(now: datetime) -> date:
    """The calendar date in Korea (UTC+9, no daylight saving), where programme dates are kept."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(KST).date()


def years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)
