"""Tokens, roles and the settings that guard production."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import httpx
import jwt
import pytest
from fastapi import Depends, FastAPI
from pydantic import SecretStr, ValidationError

from shared.auth import HS256Verifier, InvalidToken, Principal, dev_secret, require_role
from shared.contracts import Role
from shared.problems import install_problem_handlers
from shared.settings import ServiceSettings

SECRET = "s" * 40
officer = require_role(Role.OFFICER)


def app_with_officer_route() -> FastAPI:
    app = FastAPI()
    app.state.verifier = HS256Verifier(SECRET)
    install_problem_handlers(app)

    @app.get("/decide")
    def decide(principal: Annotated[Principal, Depends(officer)]) -> dict[str, str]:
        return {"sub": principal.sub}

    return app


def get(path: str, headers: dict[str, str]) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app_with_officer_route())
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(call())


def test_officer_token_is_admitted() -> None:
    token = HS256Verifier(SECRET).issue(sub="officer-kim", role=Role.OFFICER)
    response = get("/decide", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json() == {"sub": "officer-kim"}


def test_firm_token_on_an_officer_route_is_forbidden_as_problem_json() -> None:
    token = HS256Verifier(SECRET).issue(sub="ceo", role=Role.FIRM, firm_id="123-45-67890")
    response = get("/decide", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert "officer" in response.json()["detail"]


@pytest.mark.parametrize(
    "token",
    [
        None,
        "not-a-jwt",
        HS256Verifier("x" * 40).issue(sub="officer-kim", role=Role.OFFICER),
        HS256Verifier(SECRET).issue(
            sub="officer-kim",
            role=Role.OFFICER,
            now=datetime.now(UTC) - timedelta(days=2),
        ),
    ],
    ids=["missing", "garbage", "other-secret", "expired"],
)
def test_bad_tokens_get_401(token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = get("/decide", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["status"] == 401


def test_firm_token_must_name_its_firm() -> None:
    with pytest.raises(ValidationError, match="firm_id"):
        HS256Verifier(SECRET).issue(sub="ceo", role=Role.FIRM)


@pytest.mark.parametrize(
    ("secret", "database"),
    [
        (None, "postgresql+asyncpg://db/voucher"),  # no secret: no development one either
        ("short-secret", "postgresql+asyncpg://db/voucher"),
        ("s" * 40, None),  # no database: no SQLite file in production
    ],
)
def test_a_service_in_production_refuses_to_start_without_its_settings(
    monkeypatch: pytest.MonkeyPatch, secret: str | None, database: str | None
) -> None:
    from services.voucher.main import create_app

    monkeypatch.setenv("INCENTIVES_ENVIRONMENT", "production")
    for name, value in (("INCENTIVES_JWT_SECRET", secret), ("INCENTIVES_DATABASE_URL", database)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    missing = "INCENTIVES_JWT_SECRET" if secret != "s" * 40 else "INCENTIVES_DATABASE_URL"
    with pytest.raises(ValueError, match=missing):
        create_app(ServiceSettings(service="voucher"))


def test_a_command_in_production_asks_only_for_what_it_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compose ``topics`` job has a broker and nothing else: its settings load."""
    monkeypatch.setenv("INCENTIVES_ENVIRONMENT", "production")
    monkeypatch.delenv("INCENTIVES_JWT_SECRET", raising=False)
    monkeypatch.delenv("INCENTIVES_DATABASE_URL", raising=False)
    settings = ServiceSettings(kafka_bootstrap_servers="kafka:9092")
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    with pytest.raises(ValueError, match="INCENTIVES_JWT_SECRET"):
        settings.resolved_jwt_secret()


def test_production_seals_no_checkpoint_without_a_signing_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INCENTIVES_ENVIRONMENT", "production")
    monkeypatch.setenv("INCENTIVES_DATABASE_URL", "postgresql+asyncpg://db/voucher")
    monkeypatch.setenv("INCENTIVES_JWT_SECRET", "s" * 40)
    monkeypatch.delenv("INCENTIVES_CHECKPOINT_SIGNING_KEY", raising=False)
    settings = ServiceSettings()  # a service that seals nothing (oversight) may start
    with pytest.raises(ValueError, match="INCENTIVES_CHECKPOINT_SIGNING_KEY"):
        settings.signing_seed()
    monkeypatch.setenv("INCENTIVES_CHECKPOINT_SIGNING_KEY", base64.b64encode(b"k" * 31).decode())
    with pytest.raises(ValueError, match="32-byte"):
        ServiceSettings().signing_seed()
    monkeypatch.setenv("INCENTIVES_CHECKPOINT_SIGNING_KEY", base64.b64encode(b"k" * 32).decode())
    assert ServiceSettings().signing_seed() == b"k" * 32


def test_the_development_signing_key_is_created_once_and_kept(tmp_path: Path) -> None:
    settings = ServiceSettings(state_dir=tmp_path)
    first = settings.signing_seed()
    assert ServiceSettings(state_dir=tmp_path).signing_seed() == first
    assert len(first) == 32
    assert (tmp_path / "checkpoint-signing-key").stat().st_mode & 0o077 == 0


def test_development_secret_is_created_once_and_kept(tmp_path: Path) -> None:
    first = dev_secret(tmp_path)
    assert dev_secret(tmp_path) == first
    assert len(first) >= 32
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o077 == 0


def test_a_token_checked_once_is_still_refused_once_it_expires() -> None:
    verifier = HS256Verifier(SECRET)
    token = verifier.issue(sub="officer-kim", role=Role.OFFICER, ttl=timedelta(seconds=2))
    assert verifier.verify(token).sub == "officer-kim"
    assert verifier.verify(token).sub == "officer-kim"  # again, from what was checked
    time.sleep(2.5)  # exp is whole seconds: at most 2 s from now
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_a_tampered_token_is_not_mistaken_for_a_checked_one() -> None:
    verifier = HS256Verifier(SECRET)
    token = verifier.issue(sub="officer-kim", role=Role.OFFICER)
    verifier.verify(token)
    head, claims, signature = token.split(".")
    with pytest.raises(InvalidToken):
        verifier.verify(f"{head}.{claims}.{signature[:-2]}AA")


@pytest.mark.parametrize("algorithm", ["HS384", "HS512", "none"])
def test_only_hs256_with_the_secret_is_accepted(algorithm: str) -> None:
    """The verifier keeps its own HS256: a token signed another way, even with the same
    secret, or not signed at all, is refused."""
    claims = {"sub": "officer-kim", "role": "officer", "iss": "cluster-incentives"}
    claims["exp"] = int(time.time()) + 600
    secret = "k" * 64  # long enough for HS512 too
    key = None if algorithm == "none" else secret
    token = jwt.encode(claims, key, algorithm=algorithm)
    with pytest.raises(InvalidToken):
        HS256Verifier(secret).verify(token)
    assert HS256Verifier(secret).verify(jwt.encode(claims, secret, algorithm="HS256"))


def test_a_service_admits_only_tokens_meant_for_it() -> None:
    voucher = HS256Verifier(SECRET, audience="voucher")
    issuer = HS256Verifier(SECRET)
    assert voucher.verify(issuer.issue(sub="kim", role=Role.OFFICER)).sub == "kim"  # all
    assert voucher.verify(issuer.issue(sub="kim", role=Role.OFFICER, audience="voucher"))
    for elsewhere in ("fund", ["taxcredit", "oversight"]):
        with pytest.raises(InvalidToken, match=r"(?i)audience"):
            voucher.verify(issuer.issue(sub="kim", role=Role.OFFICER, audience=elsewhere))
    claims = {"sub": "kim", "role": "officer", "iss": "cluster-incentives"}
    claims["exp"] = int(time.time()) + 600
    with pytest.raises(InvalidToken, match="aud"):  # a token that names no service
        voucher.verify(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_a_secret_that_is_a_public_key_is_refused() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\n" + "A" * 64 + "\n-----END PUBLIC KEY-----\n"
    with pytest.raises(jwt.InvalidKeyError):
        HS256Verifier(pem)


def test_oversight_in_production_needs_the_services_keys() -> None:
    from services.oversight.main import create_app

    settings = ServiceSettings(
        service="oversight",
        environment="production",
        jwt_secret=SecretStr("s" * 40),
        database_url="postgresql+asyncpg://u@h/oversight",
    )
    with pytest.raises(ValueError, match="INCENTIVES_CHECKPOINT_KEYS"):
        create_app(settings)
    create_app(settings.model_copy(update={"checkpoint_keys": ["http://voucher/v1/keys"]}))
