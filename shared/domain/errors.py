"""Why a command is refused. Each kind maps to one HTTP status, in one place (the kit)."""

from __future__ import annotations


class DomainError(Exception):
    """A command the rules refuse. ``code`` is machine-readable; ``extensions`` go into
    the problem document (``field`` names the request field at fault)."""

    code = "domain_error"

    def __init__(self, message: str, **extensions: object) -> None:
        super().__init__(message)
        self.extensions = extensions


class NotFound(DomainError):
    code = "not_found"


class Forbidden(DomainError):
    """The caller may not do this to this application (HTTP 403)."""

    code = "forbidden"


class Conflict(DomainError):
    """The command clashes with the application's current state (HTTP 409)."""

    code = "conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class SameOfficer(Conflict):
    code = "same_officer"


class Unprocessable(DomainError):
    """The command is well-formed but breaks a rule about its content (HTTP 422)."""

    code = "unprocessable"
