"""Tokens from an OpenID Connect identity provider, checked with its published keys (JWKS).

The production counterpart of :class:`shared.auth.HS256Verifier`: same claims, same
principal, but the signature is RS256 or ES256 by a key the provider publishes at its
JWKS URL. Keys are fetched when a token names one the verifier does not hold (the
provider rotated its keys; or the first token), at most once per ``refetch_interval``,
and never inside the event loop: :meth:`JWKSVerifier.verify` raises
:class:`~shared.auth.KeysNeeded` and :func:`shared.auth.verify_token` fetches in a thread.
A provider that cannot be reached makes tokens with unknown keys uncheckable
(:class:`~shared.auth.KeysUnavailable`, a 503), never a 500, and keys already held keep
working.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient

from shared.auth import (
    InvalidToken,
    KeysNeeded,
    KeysUnavailable,
    Principal,
    principal_of,
    required_claims,
)

log = logging.getLogger(__name__)

ALGORITHMS = frozenset({"RS256", "ES256"})
"""The signatures accepted: public-key ones only (no HS*, no ``none``)."""


class JWKSVerifier:
    """Verifies tokens of ``issuer`` signed by a key of the JWKS at ``jwks_url``, meant for
    ``audience`` (the service: its name in ``aud``)."""

    def __init__(
        self,
        issuer: str,
        jwks_url: str,
        audience: str,
        *,
        refetch_interval: float = 10.0,
        max_age: float = 300.0,
        timeout: float = 5.0,
        leeway: float = 30.0,
    ) -> None:
        """``refetch_interval``: the least time between two fetches of the key set (a flood
        of tokens naming made-up keys costs the provider one request per interval);
        ``max_age``: how long a key set is trusted before it is fetched again (a key the
        provider withdrew stops working then; while the provider is down, the keys held
        go on working);
        ``leeway``: clock skew allowed on ``exp``, ``iat`` and ``nbf``."""
        self.issuer = issuer
        self.audience = audience
        self.refetch_interval = refetch_interval
        self.max_age = max_age
        self.leeway = leeway
        self._client = PyJWKClient(jwks_url, cache_jwk_set=False, timeout=timeout)
        self._keys: dict[str, PyJWK] = {}
        self._lock = threading.Lock()
        self._last_fetch = float("-inf")
        self._fetched_at = float("-inf")
        self._last_failure: str | None = None
        self.fetches = 0

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise InvalidToken(str(error).splitlines()[0]) from error
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise InvalidToken(
                f"the algorithm {algorithm!r} is not accepted (only {', '.join(sorted(ALGORITHMS))})"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token names no key (kid)")
        key = self._keys.get(kid)
        if key is None:
            if self._may_fetch():
                raise KeysNeeded(self.refresh)
            if self._last_failure is not None:
                raise KeysUnavailable(self._last_failure)
            raise InvalidToken(f"no key {kid!r} at the identity provider")
        if time.monotonic() - self._fetched_at > self.max_age and self._may_fetch():
            raise KeysNeeded(self._refresh_quietly)
        if key.algorithm_name != algorithm:
            raise InvalidToken(f"the key {kid!r} signs {key.algorithm_name}, not {algorithm}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": required_claims(self.audience)},
            )
        except jwt.PyJWTError as error:
            raise InvalidToken(str(error).splitlines()[0]) from error
        return principal_of(claims)

    def _may_fetch(self) -> bool:
        return time.monotonic() - self._last_fetch >= self.refetch_interval

    def refresh(self) -> None:
        """Fetch the key set now (blocking: call it from a thread), unless another caller
        did within ``refetch_interval``. Keys the provider no longer publishes are dropped.
        Raises :class:`KeysUnavailable` if the provider cannot be reached."""
        with self._lock:
            if not self._may_fetch():
                if self._last_failure is not None:
                    raise KeysUnavailable(self._last_failure)
                return
            self._last_fetch = time.monotonic()
            self.fetches += 1
            try:
                published = self._client.get_signing_keys(refresh=True)
            except jwt.PyJWTError as error:
                self._last_failure = f"the identity provider's keys could not be fetched ({error})"
                log.warning("%s", self._last_failure)
                raise KeysUnavailable(self._last_failure) from error
            self._last_failure = None
            self._fetched_at = time.monotonic()
            keys = {
                k.key_id: k
                for k in published
                if k.key_id is not None and k.algorithm_name in ALGORITHMS
            }
            if keys.keys() != self._keys.keys():
                log.info("identity provider keys: %s", ", ".join(sorted(keys)) or "none usable")
            self._keys = keys

    def _refresh_quietly(self) -> None:
        """A refresh of keys grown old: the keys held stay if the provider is away."""
        try:
            self.refresh()
        except KeysUnavailable:
            self._fetched_at = time.monotonic()  # not again until ``max_age`` passes
