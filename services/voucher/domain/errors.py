"""Why a voucher command is refused; the HTTP layer maps each kind to a status in one place."""

from __future__ import annotations


class VoucherError(Exception):
    """A command the rules refuse. ``code`` is machine-readable."""

    code = "voucher_error"

    def __init__(self, message: str, **extensions: object) -> None:
        super().__init__(message)
        self.extensions = extensions


class NotFound(VoucherError):
    code = "not_found"


class Conflict(VoucherError):
    """The command clashes with the application's current state (HTTP 409)."""

    code = "conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class SameOfficer(Conflict):
    code = "same_officer"


class BudgetExhausted(Conflict):
    code = "budget_exhausted"


class VoucherNotRedeemable(Conflict):
    code = "voucher_not_redeemable"


class DuplicateInvoice(Conflict):
    code = "duplicate_invoice"


class Unprocessable(VoucherError):
    """The command is well-formed but breaks a rule about its content (HTTP 422)."""

    code = "unprocessable"


class OverBalance(Unprocessable):
    code = "over_balance"


class CategoryNotAllowed(Unprocessable):
    code = "category_not_allowed"
