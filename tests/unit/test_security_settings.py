"""Production security settings: what they refuse, and the clients and verifier they make."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLScram256, SASLScram512
from pydantic import ValidationError

from shared.auth import HS256Verifier, InvalidToken
from shared.contracts import Role
from shared.oidc import JWKSVerifier
from shared.security import (
    database_ssl,
    kafka_broker_security,
    kafka_client_options,
    token_verifier,
)
from shared.settings import ServiceSettings


@pytest.fixture(scope="module")
def cafile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def test_the_defaults_change_nothing(tmp_path: Path) -> None:
    settings = ServiceSettings(state_dir=tmp_path)
    assert kafka_client_options(settings) == {}
    assert kafka_broker_security(settings) is None
    assert database_ssl(settings) is None
    assert isinstance(token_verifier(settings), HS256Verifier)


def test_sasl_ssl_without_a_user_is_refused_when_the_settings_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INCENTIVES_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("INCENTIVES_KAFKA_SASL_USERNAME", "voucher")
    with pytest.raises(ValidationError, match="INCENTIVES_KAFKA_SASL_PASSWORD"):
        ServiceSettings()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"kafka_ssl_keyfile": "key.pem"}, "INCENTIVES_KAFKA_SSL_CERTFILE"),
        ({"oidc_issuer": "https://idp"}, "INCENTIVES_OIDC_JWKS_URL"),
        ({"oidc_jwks_url": "https://idp/jwks"}, "INCENTIVES_OIDC_ISSUER"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "kafka_security_protocol"),
        ({"database_ssl_mode": "prefer"}, "database_ssl_mode"),
    ],
)
def test_settings_that_cannot_work_are_refused(options: dict[str, str], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        ServiceSettings(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mechanism", "kind"),
    [
        ("SCRAM-SHA-512", SASLScram512),
        ("SCRAM-SHA-256", SASLScram256),
    ],
)
def test_sasl_ssl_gives_every_client_tls_and_the_user(
    cafile: Path, mechanism: str, kind: type[BaseSecurity]
) -> None:
    settings = ServiceSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,  # type: ignore[arg-type]
        kafka_sasl_username="voucher",
        kafka_sasl_password="s3cret",  # type: ignore[arg-type]
        kafka_ssl_cafile=cafile,
    )
    options = kafka_client_options(settings)
    assert {k: v for k, v in options.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "voucher",
        "sasl_plain_password": "s3cret",
    }
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1  # the cluster CA named, not the system's

    security = kafka_broker_security(settings)
    assert isinstance(security, kind)
    broker_options = parse_security(security)  # what FastStream hands its aiokafka clients
    assert {k: v for k, v in broker_options.items() if k != "ssl_context"} == {
        k: v for k, v in options.items() if k != "ssl_context"
    }
    assert broker_options["ssl_context"].get_ca_certs() == context.get_ca_certs()
    assert "s3cret" not in repr(settings)


def test_ssl_alone_gives_tls_without_sasl(cafile: Path) -> None:
    settings = ServiceSettings(kafka_security_protocol="SSL", kafka_ssl_cafile=cafile)
    options = kafka_client_options(settings)
    assert set(options) == {"security_protocol", "ssl_context"}
    assert parse_security(kafka_broker_security(settings))["security_protocol"] == "SSL"


def test_database_tls_modes(cafile: Path) -> None:
    def context(mode: str, root: Path | None = cafile) -> ssl.SSLContext | bool | None:
        return database_ssl(
            ServiceSettings(database_ssl_mode=mode, database_ssl_root_cert=root)  # type: ignore[arg-type]
        )

    full = context("verify-full")
    assert isinstance(full, ssl.SSLContext)
    assert full.check_hostname and full.verify_mode == ssl.CERT_REQUIRED
    required = context("require", root=None)
    assert isinstance(required, ssl.SSLContext)
    assert required.verify_mode == ssl.CERT_NONE  # encrypted, as libpq's require
    assert context("disable") is False


def test_production_with_oidc_needs_no_jwt_secret_and_uses_the_providers_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("INCENTIVES_JWT_SECRET", raising=False)
    settings = ServiceSettings(
        environment="production",
        service="fund",
        database_url="postgresql+asyncpg://db/fund",
        oidc_issuer="https://idp.example/realms/incentives",
        oidc_jwks_url="https://idp.example/realms/incentives/protocol/openid-connect/certs",
    )
    settings.require_service_settings()
    verifier = token_verifier(settings)
    assert isinstance(verifier, JWKSVerifier)
    assert verifier.audience == "fund"


def test_production_without_a_secret_or_oidc_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INCENTIVES_JWT_SECRET", raising=False)
    settings = ServiceSettings(environment="production", database_url="postgresql://db/x")
    with pytest.raises(ValueError, match=r"INCENTIVES_JWT_SECRET.*INCENTIVES_OIDC_JWKS_URL"):
        settings.require_service_settings()


def test_a_jwt_secret_rotation_accepts_the_old_secret_until_it_is_dropped(
    tmp_path: Path,
) -> None:
    """During a rotation tokens of the new secret and of the previous one both work; a
    token of any other secret never does; once the old one is dropped its tokens are 401."""
    old, new, other = "o" * 40, "n" * 40, "x" * 40
    issued = {
        name: HS256Verifier(secret).issue(sub="analyst", role=Role.MINISTRY)
        for name, secret in (("old", old), ("new", new), ("other", other))
    }

    def settings(previous: list[str]) -> ServiceSettings:
        return ServiceSettings(
            service="voucher",
            state_dir=tmp_path,
            jwt_secret=new,
            jwt_previous_secrets=previous,  # type: ignore[arg-type]
        )

    rotating = token_verifier(settings([old]))
    assert rotating.verify(issued["new"]).sub == "analyst"
    assert rotating.verify(issued["old"]).sub == "analyst"
    with pytest.raises(InvalidToken, match="Signature verification failed"):
        rotating.verify(issued["other"])
    after = token_verifier(settings([]))
    assert after.verify(issued["new"]).sub == "analyst"
    with pytest.raises(InvalidToken):
        after.verify(issued["old"])
