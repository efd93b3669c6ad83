"""Tokens from an identity provider, checked with the keys it publishes (JWKS).

The provider is a stand-in: a real HTTP server on a free local port serving a JWKS of an
RSA and an EC key made here; the verifier fetches it over HTTP as it would Keycloak's or
Entra's. It answers, rotates its keys, or goes away, as each test needs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from services.voucher.main import create_app
from shared.auth import HS256Verifier, InvalidToken, KeysUnavailable, verify_token
from shared.contracts import Role
from shared.oidc import JWKSVerifier
from shared.settings import ServiceSettings
from tests.conftest import free_port
from tests.integration.harness import ServiceHarness, running

ISSUER = "https://idp.test/realms/incentives"


class Key:
    """A signing key of the provider: its private half signs, its JWK is published."""

    def __init__(self, kid: str, kind: str) -> None:
        self.kid = kid
        self.algorithm = "RS256" if kind == "rsa" else "ES256"
        self.private: Any = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "rsa"
            else ec.generate_private_key(ec.SECP256R1())
        )
        codec = RSAAlgorithm if kind == "rsa" else ECAlgorithm
        self.jwk: dict[str, Any] = {
            **codec.to_jwk(self.private.public_key(), as_dict=True),
            "kid": kid,
            "use": "sig",
            "alg": self.algorithm,
        }

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.algorithm, headers={"kid": self.kid, **header}
        )


def claims(
    *,
    aud: str | list[str] = "voucher",
    iss: str = ISSUER,
    ttl: timedelta = timedelta(minutes=5),
    **extra: Any,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "sub": "officer-kim",
        "role": "officer",
        "iss": iss,
        "aud": aud,
        "iat": now,
        "exp": now + ttl,
        **extra,
    }


class Provider:
    """The JWKS endpoint: ``keys`` is what it publishes; ``down`` makes it answer 503;
    ``delay`` makes it slow."""

    def __init__(self, keys: list[Key]) -> None:
        self.keys = keys
        self.down = False
        self.delay = 0.0
        self.requests = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.requests += 1
                time.sleep(provider.delay)
                if provider.down or self.path != "/jwks":
                    self.send_error(503 if provider.down else 404)
                    return
                body = json.dumps({"keys": [k.jwk for k in provider.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


RSA_KEY = Key("rsa-2026-01", "rsa")
EC_KEY = Key("ec-2026-01", "ec")


@pytest.fixture
def provider() -> Iterator[Provider]:
    served = Provider([RSA_KEY, EC_KEY])
    yield served
    served.close()


def verifier_of(provider: Provider, **options: Any) -> JWKSVerifier:
    return JWKSVerifier(ISSUER, provider.url, audience="voucher", **options)


async def test_tokens_signed_by_the_providers_rsa_and_ec_keys_name_the_caller(
    provider: Provider,
) -> None:
    verifier = verifier_of(provider)
    officer = await verify_token(verifier, RSA_KEY.sign(claims()))
    firm = await verify_token(
        verifier,
        EC_KEY.sign(
            claims(sub="ceo", role="firm", firm_id="123-45-67890", aud=["voucher", "fund"])
        ),
    )
    assert (officer.sub, officer.role) == ("officer-kim", Role.OFFICER)
    assert (firm.sub, firm.role, firm.firm_id) == ("ceo", Role.FIRM, "123-45-67890")
    assert provider.requests == 1  # the key set, fetched once for both


def _hs256_with(secret: bytes, header: dict[str, Any], payload: dict[str, Any]) -> str:
    """A token signed with HMAC by hand (PyJWT refuses a public key as an HMAC secret)."""

    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value, default=lambda d: int(d.timestamp())).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{part(header)}.{part(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("another audience", "Audience"),
        ("another issuer", "issuer"),
        ("expired", "expired"),
        ("no audience", "aud"),
        ("unknown key", "no key"),
        ("hs256 with the public key", "algorithm 'HS256' is not accepted"),
        ("alg none", "algorithm 'none' is not accepted"),
        ("rs256 header on the ec key", "signs ES256"),
        ("a key of another provider", "Signature verification failed"),
        ("firm without firm_id", "firm token needs firm_id"),
        ("the system role", "system role"),
    ],
)
async def test_bad_tokens_are_refused(provider: Provider, case: str, expected: str) -> None:
    stranger = Key(RSA_KEY.kid, "rsa")  # same kid, another key
    no_aud = claims()
    del no_aud["aud"]
    token = {
        "another audience": lambda: RSA_KEY.sign(claims(aud="fund")),
        "another issuer": lambda: RSA_KEY.sign(claims(iss="https://evil.test")),
        "expired": lambda: RSA_KEY.sign(claims(ttl=timedelta(minutes=-5))),
        "no audience": lambda: RSA_KEY.sign(no_aud),
        "unknown key": lambda: Key("rsa-nobody", "rsa").sign(claims()),
        "hs256 with the public key": lambda: _hs256_with(
            RSA_KEY.public_pem(), {"alg": "HS256", "typ": "JWT", "kid": RSA_KEY.kid}, claims()
        ),
        "alg none": lambda: jwt.encode(
            claims(), None, algorithm="none", headers={"kid": RSA_KEY.kid}
        ),
        "rs256 header on the ec key": lambda: Key(EC_KEY.kid, "rsa").sign(claims()),
        "a key of another provider": lambda: stranger.sign(claims()),
        "firm without firm_id": lambda: EC_KEY.sign(claims(role="firm")),
        "the system role": lambda: EC_KEY.sign(claims(role="system")),
    }[case]()
    verifier = verifier_of(provider)
    with pytest.raises(InvalidToken, match=expected):
        await verify_token(verifier, token)


async def test_a_rotated_key_is_fetched_once_and_a_withdrawn_one_stops_working(
    provider: Provider,
) -> None:
    verifier = verifier_of(provider, refetch_interval=0.2)
    await verify_token(verifier, RSA_KEY.sign(claims()))
    assert verifier.fetches == 1
    rotated = Key("rsa-2026-07", "rsa")
    provider.keys = [rotated, EC_KEY]  # the provider rotates: the old RSA key is withdrawn
    await asyncio.sleep(0.25)

    principal = await verify_token(verifier, rotated.sign(claims(sub="officer-park")))
    assert principal.sub == "officer-park"
    assert verifier.fetches == 2  # one refetch for the new kid
    assert await verify_token(verifier, rotated.sign(claims()))  # held now: no fetch
    assert verifier.fetches == 2
    with pytest.raises(InvalidToken, match="no key"):
        await verify_token(verifier, RSA_KEY.sign(claims()))


async def test_made_up_key_ids_cost_the_provider_one_request_per_interval(
    provider: Provider,
) -> None:
    verifier = verifier_of(provider, refetch_interval=60)
    await verify_token(verifier, RSA_KEY.sign(claims()))
    for n in range(20):
        with pytest.raises(InvalidToken, match="no key"):
            await verify_token(verifier, Key(f"made-up-{n}", "ec").sign(claims()))
    assert provider.requests == 1


async def test_a_provider_that_is_down_leaves_tokens_unchecked_not_accepted(
    provider: Provider,
) -> None:
    provider.down = True
    verifier = verifier_of(provider, refetch_interval=0.1)
    with pytest.raises(KeysUnavailable, match="could not be fetched"):
        await verify_token(verifier, RSA_KEY.sign(claims()))
    with pytest.raises(KeysUnavailable):  # within the interval: not asked again
        await verify_token(verifier, RSA_KEY.sign(claims()))
    assert provider.requests == 1

    provider.down = False  # back: the next token after the interval is checked
    await asyncio.sleep(0.15)
    assert (await verify_token(verifier, RSA_KEY.sign(claims()))).sub == "officer-kim"

    provider.down = True  # down again: the keys held go on working
    await asyncio.sleep(0.15)
    assert await verify_token(verifier, EC_KEY.sign(claims()))


async def test_a_provider_that_cannot_be_reached_at_all_is_unavailable() -> None:
    verifier = JWKSVerifier(ISSUER, f"http://127.0.0.1:{free_port()}/jwks", "voucher")
    with pytest.raises(KeysUnavailable, match="could not be fetched"):
        await verify_token(verifier, RSA_KEY.sign(claims()))


async def test_fetching_keys_does_not_stop_the_event_loop(provider: Provider) -> None:
    """A slow provider holds up the request that needs the keys, not every other one."""
    provider.delay = 0.5
    verifier = verifier_of(provider)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await verify_token(verifier, RSA_KEY.sign(claims()))
    finally:
        ticker.cancel()
    assert ticks >= 20  # the loop ran on while the key set was fetched


@contextlib.asynccontextmanager
async def voucher_with_oidc(
    provider_url: str, kafka_bootstrap: str, tmp_path: Path
) -> AsyncIterator[ServiceHarness]:
    settings = ServiceSettings(
        service="voucher",
        environment="production",
        database_url=f"sqlite+aiosqlite:///{tmp_path}/voucher.db",
        checkpoint_signing_key=base64.b64encode(b"k" * 32).decode(),
        migrate_on_start=True,  # production leaves it to the migration job
        oidc_issuer=ISSUER,
        oidc_jwks_url=provider_url,
        state_dir=tmp_path,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"oidc-{time.time_ns()}.",
        topic_partitions=1,
        kafka_session_timeout_ms=1000,
    )
    async with running(create_app, settings) as harness:
        yield harness


async def test_a_service_in_production_with_oidc_admits_the_providers_tokens_only(
    provider: Provider, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """No JWT secret is set: the service starts on the OIDC settings, admits a token the
    provider signed, refuses an HS256 one, and answers 503 (not 500) while the provider
    is down and the token's key is unknown."""
    hs256 = HS256Verifier("s" * 40).issue(sub="officer-kim", role=Role.OFFICER)
    async with voucher_with_oidc(provider.url, kafka_bootstrap, tmp_path) as harness:
        client = harness.client
        assert isinstance(harness.app.state.verifier, JWKSVerifier)
        admitted = await client.get(
            "/v1/programmes", headers={"Authorization": f"Bearer {RSA_KEY.sign(claims())}"}
        )
        refused = await client.get("/v1/programmes", headers={"Authorization": f"Bearer {hs256}"})
        provider.down = True
        harness.app.state.verifier.refetch_interval = 0  # ask the provider at once
        unknown = Key("rsa-2027-01", "rsa").sign(claims())
        unavailable = await client.get(
            "/v1/programmes", headers={"Authorization": f"Bearer {unknown}"}
        )
    assert admitted.status_code == 200, admitted.text
    assert refused.status_code == 401
    assert "HS256" in refused.json()["detail"]
    assert unavailable.status_code == 503, unavailable.text
    assert unavailable.headers["content-type"] == "application/problem+json"
    assert "could not be fetched" in unavailable.json()["detail"]
