"""Production security from settings, in one place: TLS and SASL to Kafka, TLS to
PostgreSQL, and which token verifier a service uses.

Every Kafka client of a process (the FastStream broker, the relay's producer, the admin
clients that make topics and watch the cluster, the lag meter, the DLQ and audit tools)
takes its security from :func:`kafka_client_options` (plain aiokafka) or
:func:`kafka_broker_security` (FastStream); every engine from :func:`create_service_engine`.
The defaults change nothing: PLAINTEXT to Kafka, the URL's own TLS to PostgreSQL, HS256.
"""

from __future__ import annotations

import ssl
from typing import Any

from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.auth import HS256Verifier, RotatingHS256Verifier, TokenVerifier
from shared.eventstore import create_engine
from shared.oidc import JWKSVerifier
from shared.settings import ServiceSettings


def kafka_ssl_context(settings: ServiceSettings) -> ssl.SSLContext | None:
    """The TLS context of every Kafka connection: the broker's certificate checked against
    ``kafka_ssl_cafile`` (or the system's CAs) and its host name; a client certificate for
    mutual TLS if one is set. None for PLAINTEXT."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
    )
    if settings.kafka_ssl_certfile is not None:
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    return context


def kafka_client_options(settings: ServiceSettings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin): empty for
    PLAINTEXT, so that the default is exactly what it was."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {
        "security_protocol": settings.kafka_security_protocol,
        "ssl_context": kafka_ssl_context(settings),
    }
    if settings.kafka_security_protocol == "SASL_SSL":
        assert settings.kafka_sasl_password is not None  # the settings refuse it otherwise
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
        }
    return options


_SASL = {"SCRAM-SHA-512": SASLScram512, "SCRAM-SHA-256": SASLScram256, "PLAIN": SASLPlaintext}


def kafka_broker_security(settings: ServiceSettings) -> BaseSecurity | None:
    """The ``security=`` of FastStream's ``KafkaBroker``: the same connection as
    :func:`kafka_client_options` gives a plain client (None for PLAINTEXT)."""
    context = kafka_ssl_context(settings)
    if settings.kafka_security_protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    if settings.kafka_security_protocol == "SASL_SSL":
        assert settings.kafka_sasl_username and settings.kafka_sasl_password
        return _SASL[settings.kafka_sasl_mechanism](
            settings.kafka_sasl_username,
            settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            use_ssl=True,
        )
    return None


def database_ssl(settings: ServiceSettings) -> ssl.SSLContext | bool | None:
    """What asyncpg's ``ssl`` argument gets: a context for ``require`` and ``verify-full``,
    False for ``disable``, None (the URL decides) when unset."""
    mode = settings.database_ssl_mode
    if mode is None:
        return None
    if mode == "disable":
        return False
    root = str(settings.database_ssl_root_cert) if settings.database_ssl_root_cert else None
    if mode == "verify-full":
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=root)
    # require: encrypted; the certificate checked against a root given, as libpq does
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=root)
    context.check_hostname = False
    if root is None:
        context.verify_mode = ssl.CERT_NONE
    return context


def create_service_engine(settings: ServiceSettings, **kwargs: Any) -> AsyncEngine:
    """The engine of the settings' database, with their TLS (PostgreSQL only)."""
    url = settings.resolved_database_url()
    tls = database_ssl(settings)
    if tls is not None and not url.startswith("sqlite"):
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args["ssl"] = tls
        kwargs["connect_args"] = connect_args
    return create_engine(url, **kwargs)


def token_verifier(settings: ServiceSettings) -> TokenVerifier:
    """The service's verifier: the identity provider's keys when OIDC is set, else HS256
    with the configured (development: generated) secret."""
    if settings.oidc_issuer is not None and settings.oidc_jwks_url is not None:
        return JWKSVerifier(settings.oidc_issuer, settings.oidc_jwks_url, settings.service)
    current = HS256Verifier(settings.resolved_jwt_secret(), audience=settings.service)
    if not settings.jwt_previous_secrets:
        return current
    previous = [
        HS256Verifier(s.get_secret_value(), audience=settings.service)
        for s in settings.jwt_previous_secrets
    ]
    return RotatingHS256Verifier(current, previous)
