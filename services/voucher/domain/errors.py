"""Why a voucher command is refused: the shared kinds, and the voucher's own."""

from __future__ import annotations

from shared.domain import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidTransition,
    NotFound,
    SameOfficer,
    Unprocessable,
)

VoucherError = DomainError


class BudgetExhausted(Conflict):
    code = "budget_exhausted"


class VoucherNotRedeemable(Conflict):
    code = "voucher_not_redeemable"


class DuplicateInvoice(Conflict):
    code = "duplicate_invoice"


class PaidAfterAll(Conflict):
    """A failed payout the treasury turned out to have made: it is recorded paid, not cancelled."""


class DuplicateProvider(InvalidTransition):
    code = "duplicate_provider"


class OverBalance(Unprocessable):
    code = "over_balance"


class CategoryNotAllowed(Unprocessable):
    code = "category_not_allowed"


__all__ = [
    "BudgetExhausted",
    "CategoryNotAllowed",
    "Conflict",
    "DomainError",
    "DuplicateInvoice",
    "DuplicateProvider",
    "Forbidden",
    "InvalidTransition",
    "NotFound",
    "OverBalance",
    "PaidAfterAll",
    "SameOfficer",
    "Unprocessable",
    "VoucherError",
    "VoucherNotRedeemable",
]
