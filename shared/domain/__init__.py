"""Contracts every programme shares: firms, the strategic-technology vocabulary, domain
errors, officer decisions with four eyes, typed event payloads and the decider's shape.

Pure: no I/O library is imported here. Programme domains build on it, and oversight
and the audit tools import both to replay histories with the services' own folds.
"""

from shared.domain.decider import Decider, ProcessedState, decide_by_command, fold_events
from shared.domain.decisions import (
    KST,
    Approval,
    Decision,
    Reason,
    officer_decision,
    today_in_korea,
    years_before,
)
from shared.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidTransition,
    NotFound,
    SameOfficer,
    Unprocessable,
)
from shared.domain.events import EventPayload, EventRegistry, Part
from shared.domain.firms import BUSINESS_NUMBER, Firm, FirmSize
from shared.domain.lifecycle import (
    ApprovalPayload,
    OfficerDecides,
    ReasonPayload,
    RejectionPayload,
    Withdraw,
    WithdrawalPayload,
    advanced,
    firm_identity_failures,
    opening,
    require_new,
    require_status,
)
from shared.domain.vocabulary import StrategicIndustry, StrategicTechnology, load_technologies

__all__ = [
    "BUSINESS_NUMBER",
    "KST",
    "Approval",
    "ApprovalPayload",
    "Conflict",
    "Decider",
    "Decision",
    "DomainError",
    "EventPayload",
    "EventRegistry",
    "Firm",
    "FirmSize",
    "Forbidden",
    "InvalidTransition",
    "NotFound",
    "OfficerDecides",
    "Part",
    "ProcessedState",
    "Reason",
    "ReasonPayload",
    "RejectionPayload",
    "SameOfficer",
    "StrategicIndustry",
    "StrategicTechnology",
    "Unprocessable",
    "Withdraw",
    "WithdrawalPayload",
    "advanced",
    "decide_by_command",
    "firm_identity_failures",
    "fold_events",
    "load_technologies",
    "officer_decision",
    "opening",
    "require_new",
    "require_status",
    "today_in_korea",
    "years_before",
]
