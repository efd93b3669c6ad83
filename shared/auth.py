"""Bearer JWT verification and the roles of the design.

HS256 with a configured secret in development; :class:`TokenVerifier` is a
protocol so production can swap in an OIDC/JWKS verifier (``shared.oidc``) without
touching routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import jwt
from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import HTTPBearer
from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS
from jwt.exceptions import InvalidKeyError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.routing import BaseRoute

from shared.contracts import Actor, Role
from shared.problems import Problem

ISSUER = "cluster-incentives"


class Principal(BaseModel):
    """The caller, as the verified token names them."""

    model_config = ConfigDict(frozen=True)

    sub: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    role: Role
    firm_id: str | None = Field(default=None, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
    provider_id: str | None = Field(default=None, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")

    @model_validator(mode="after")
    def _ids_match_role(self) -> Principal:
        if self.role is Role.SYSTEM:
            raise ValueError("tokens cannot carry the system role")
        if self.role is Role.FIRM and not self.firm_id:
            raise ValueError("a firm token needs firm_id")
        if self.role is Role.PROVIDER and not self.provider_id:
            raise ValueError("a provider token needs provider_id")
        return self

    @property
    def actor(self) -> Actor:
        return Actor(sub=self.sub, role=self.role)


class TokenVerifier(Protocol):
    def verify(self, token: str) -> Principal: ...


class InvalidToken(Exception):
    pass


class KeysNeeded(Exception):
    """Raised by a verifier that must fetch keys (I/O) before it can decide on a token:
    the caller runs ``fetch`` away from the event loop, then asks again (see
    :func:`verify_token`). ``fetch`` raises :class:`KeysUnavailable` if it cannot."""

    def __init__(self, fetch: Callable[[], None]) -> None:
        super().__init__("the verifier's keys must be fetched first")
        self.fetch = fetch


class KeysUnavailable(Exception):
    """The keys to check a token with cannot be had now (the identity provider is down):
    the token is neither good nor bad, and the request may be tried again."""


def principal_of(claims: dict[str, Any]) -> Principal:
    """The caller a verified token's claims name (``sub``, ``role``, ``firm_id``,
    ``provider_id``), whichever verifier checked its signature."""
    try:
        return Principal.model_validate(claims)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidToken(f"{where + ': ' if where else ''}{first['msg']}") from error


def required_claims(audience: str | None) -> list[str]:
    return ["sub", "exp", "iss", "aud"] if audience else ["sub", "exp", "iss"]


async def verify_token(verifier: TokenVerifier, token: str) -> Principal:
    """``verifier.verify(token)``, fetching keys in a thread when it needs them: a request
    handler never waits on the network inside the event loop."""
    try:
        return verifier.verify(token)
    except KeysNeeded as needed:
        await asyncio.to_thread(needed.fetch)
    try:
        return verifier.verify(token)
    except KeysNeeded as error:  # fetched just now, and still no key for it
        raise InvalidToken("no key of the identity provider signed this token") from error


class _OneSecretHS256(HMACAlgorithm):
    """HS256 with one secret, checked once when the verifier is made.

    PyJWT checks an HMAC key on every call (not a PEM, SSH or DER key, not a JWK),
    which cost a busy service a fifteenth of its time with a new token per request.
    """

    def __init__(self, secret: bytes) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self.secret = super().prepare_key(secret)

    def prepare_key(self, key: str | bytes) -> bytes:
        if key is not self.secret:
            raise InvalidKeyError("this verifier signs and checks with its own secret only")
        return self.secret


class _Codec(jwt.PyJWT):
    """PyJWT that knows one algorithm, HS256 with the one secret."""

    def __init__(self, algorithm: _OneSecretHS256) -> None:
        super().__init__()
        signatures = PyJWS(algorithms=["HS256"])
        signatures.unregister_algorithm("HS256")
        signatures.register_algorithm("HS256", algorithm)
        self._jws = signatures  # PyJWT 2 keeps its JWS codec here (pinned)


AUDIENCES = ("oversight", "voucher", "taxcredit", "fund")
"""The services a token may be meant for (its ``aud``)."""


class HS256Verifier:
    """Verifies tokens signed with a shared secret, meant for ``audience`` (a service)."""

    def __init__(self, secret: str, issuer: str = ISSUER, audience: str | None = None) -> None:
        """``audience``: the service verifying; a token must name it in its ``aud``. None
        (tools that only issue tokens) checks no audience."""
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 characters")
        algorithm = _OneSecretHS256(secret.encode())
        self._secret = algorithm.secret
        self._codec = _Codec(algorithm)
        self._issuer = issuer
        self._audience = audience
        self._verified: dict[str, tuple[Principal, float]] = {}

    VERIFIED_TOKENS = 10_000
    """Tokens whose signature was checked, kept with their expiry (a caller sends the
    same token with every request; checking its signature each time cost a twentieth
    of a busy service's time)."""

    def verify(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            principal, expires = known
            if time.time() < expires:
                return principal
            del self._verified[token]
        try:
            claims = self._codec.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=self._issuer,
                audience=self._audience,
                options={
                    "require": required_claims(self._audience),
                    "verify_aud": self._audience is not None,
                },
            )
        except jwt.PyJWTError as error:
            raise InvalidToken(str(error).splitlines()[0]) from error
        principal = principal_of(claims)
        if len(self._verified) >= self.VERIFIED_TOKENS:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (principal, float(claims["exp"]))
        return principal

    def issue(
        self,
        *,
        sub: str,
        role: Role,
        firm_id: str | None = None,
        provider_id: str | None = None,
        ttl: timedelta = timedelta(hours=12),
        now: datetime | None = None,
        audience: str | Sequence[str] = AUDIENCES,
    ) -> str:
        """Sign a token for ``sub`` (development and tests; production tokens come from the
        IdP), meant for the services ``audience`` names (all of them unless told)."""
        principal = Principal(sub=sub, role=role, firm_id=firm_id, provider_id=provider_id)
        issued = now or datetime.now(UTC)
        claims = {
            **principal.model_dump(mode="json", exclude_none=True),
            "iss": self._issuer,
            "aud": audience if isinstance(audience, str) else list(audience),
            "iat": issued,
            "exp": issued + ttl,
        }
        return self._codec.encode(claims, self._secret, algorithm="HS256")


class RotatingHS256Verifier:
    """HS256 during a rotation: tokens signed with the current secret or a previous one."""

    def __init__(self, current: HS256Verifier, previous: Sequence[HS256Verifier]) -> None:
        self.current = current
        self.previous = list(previous)

    def verify(self, token: str) -> Principal:
        try:
            return self.current.verify(token)
        except InvalidToken as refused:
            for verifier in self.previous:
                with contextlib.suppress(InvalidToken):
                    return verifier.verify(token)
            raise refused


def dev_secret(state_dir: Path) -> str:
    """The development secret in ``state_dir``, created on first use (never for production):
    readable by its owner only from its first byte, and never written over."""
    path = state_dir / "jwt-secret"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: theirs is the secret
        else:
            secret = secrets.token_urlsafe(48)
            with os.fdopen(descriptor, "w") as file:
                file.write(secret)
            return secret
    for _ in range(100):  # once whoever made it has written it
        if found := path.read_text().strip():
            return found
        time.sleep(0.01)
    raise RuntimeError(f"{path} is empty: remove it to have a new development secret made")


def unauthorized(detail: str) -> Problem:
    return Problem(
        status=401,
        title="Not authenticated",
        detail=detail,
        type_="unauthorized",
        headers={"WWW-Authenticate": "Bearer"},
    )


BEARER = HTTPBearer(
    auto_error=False,
    description="A token from the identity provider (in development: `incentives token`).",
)
"""The security scheme the OpenAPI documents name on every operation behind a token."""


F = TypeVar("F", bound=Callable[..., Any])


def reads_bearer(dependency: F) -> F:
    """Mark ``dependency`` as reading the bearer token: the operations that depend on it,
    directly or through another dependency, name :data:`BEARER` in the OpenAPI documents
    (:func:`document_bearer`). The scheme is not itself a dependency: FastAPI would solve
    it on every request for a document read once."""
    dependency.__reads_bearer__ = True  # type: ignore[attr-defined]
    return dependency


def document_bearer(schema: dict[str, Any], routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """``schema`` with :data:`BEARER` required by every operation of ``routes`` that depends
    on a :func:`reads_bearer` dependency, as FastAPI would document a security dependency."""
    name = BEARER.scheme_name
    paths = schema.get("paths", {})
    behind = False
    for context in iter_route_contexts(list(routes)):  # the routes of included routers too
        route = context.original_route
        if not isinstance(route, APIRoute) or not _reads_bearer(route.dependant):
            continue
        for method in context.methods or ():
            operation = paths.get(context.path_format, {}).get(method.lower())
            if operation is not None:
                operation["security"] = [{name: []}]
                behind = True
    if behind:
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})[name] = BEARER.model.model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
    return schema


def _reads_bearer(dependant: Dependant) -> bool:
    if getattr(dependant.call, "__reads_bearer__", False):
        return True
    return any(_reads_bearer(d) for d in dependant.dependencies)


@reads_bearer
async def authenticate(request: Request) -> Principal:
    """The verified caller of this request, as a FastAPI dependency (:func:`caller`)."""
    return await caller(request)


async def caller(request: Request) -> Principal:
    """The verified caller of ``request`` (the app's verifier sits in ``app.state.verifier``).
    The header is read here, so that every refusal is a problem+json 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("send a bearer token: Authorization: Bearer <token>")
    verifier: TokenVerifier = request.app.state.verifier
    try:
        return await verify_token(verifier, token.strip())
    except InvalidToken as error:
        raise unauthorized(f"the token was refused: {error}") from error
    except KeysUnavailable as error:
        raise Problem(
            status=503,
            title="Identity provider unavailable",
            detail=f"the token cannot be checked now: {error}",
            type_="identity-provider-unavailable",
            headers={"Retry-After": "5"},
        ) from error


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


def require_role(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits only callers holding one of ``roles``."""
    allowed = frozenset(roles)

    # the caller is found here rather than through ``authenticate``: a dependency less for
    # FastAPI to solve on every request (a tenth of a busy service's time went to solving)
    @reads_bearer
    async def check(request: Request) -> Principal:
        principal = await caller(request)
        if principal.role not in allowed:
            raise Problem(
                status=403,
                title="Forbidden",
                detail=f"this needs the role {_names(allowed)}; the token has {principal.role}",
                type_="forbidden",
            )
        return principal

    return check


def _names(roles: Iterable[Role]) -> str:
    return " or ".join(sorted(str(r) for r in roles))
