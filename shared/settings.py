"""Settings from the environment (prefix ``INCENTIVES_``), one model for every service."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.auth import dev_secret


def dev_signing_seed(state_dir: Path) -> bytes:
    """The development checkpoint-signing key in ``state_dir``, created on first use (never
    for production): standard base64 of a 32-byte Ed25519 seed."""
    path = state_dir / "checkpoint-signing-key"
    if path.exists():
        return base64.b64decode(path.read_text().strip())
    state_dir.mkdir(parents=True, exist_ok=True)
    seed = secrets.token_bytes(32)
    path.write_text(base64.b64encode(seed).decode())
    path.chmod(0o600)
    return seed


class RetiredKey(BaseModel):
    """A checkpoint key the service signed with before its current one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str = Field(min_length=1, max_length=100)
    algorithm: Literal["Ed25519"] = "Ed25519"
    public_key: str
    """Standard base64 of the 32 raw bytes of the Ed25519 public key."""
    valid_from: datetime

    @field_validator("public_key")
    @classmethod
    def _ed25519(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError as error:
            raise ValueError("not standard base64") from error
        if len(raw) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        return value

    @field_validator("valid_from")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("give a zone: Z or an offset")
        return value.astimezone(UTC)


class ServiceSettings(BaseSettings):
    """How one service process connects to the world.

    Development (the default) needs nothing set: SQLite under ``state_dir``, the
    embedded broker on 127.0.0.1:9092, and a JWT secret created in ``state_dir``.
    Production refuses to start without an explicit secret and database.
    """

    model_config = SettingsConfigDict(env_prefix="INCENTIVES_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    service: str = "service"
    state_dir: Path = Path("var")
    database_url: str | None = None
    database_pool_size: int = 16
    """Connections kept open to PostgreSQL. Requests beyond it wait for one: opening
    and closing connections per request (an overflow pool) costs more than the wait."""
    database_ssl_mode: Literal["disable", "require", "verify-full"] | None = None
    """TLS to PostgreSQL: ``disable`` (none), ``require`` (encrypted; the server's
    certificate is checked against ``database_ssl_root_cert`` only if one is given) or
    ``verify-full`` (certificate signed by that CA, or the system's, and naming the host).
    Unset: as the URL says (asyncpg's default tries TLS and falls back to none). SQLite
    ignores it."""
    database_ssl_root_cert: Path | None = None
    """The CA (PEM) PostgreSQL's certificate must be signed by."""
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    """How every Kafka client of the process connects: ``SSL`` (TLS, with a client
    certificate if ``kafka_ssl_certfile`` is given) or ``SASL_SSL`` (TLS and a user name and
    password, e.g. a Strimzi ``KafkaUser`` with SCRAM-SHA-512)."""
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    """The CA (PEM) the broker's certificate must be signed by (Strimzi: the cluster CA,
    ``<cluster>-cluster-ca-cert``); unset: the system's."""
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    """A client certificate and its key (PEM) for mutual TLS (Strimzi's ``tls`` users)."""
    topic_prefix: str = ""
    topic_partitions: int = 8
    jwt_secret: SecretStr | None = None
    jwt_previous_secrets: list[SecretStr] = []
    """Secrets tokens were signed with before ``jwt_secret``, still accepted while a
    rotation goes on (a JSON list): set the new secret with the old one here, move the
    token issuer to the new one, and empty this once the old tokens have expired."""
    oidc_issuer: str | None = None
    oidc_jwks_url: str | None = None
    """An identity provider's issuer (``iss``) and key set (JWKS) URL. Both set: tokens are
    RS256 or ES256 from that provider, with ``aud`` naming the service, and the JWT secret
    is not used. Unset: HS256 with ``jwt_secret`` (development: a secret in ``state_dir``)."""
    relay_batch_size: int = 1000
    stages_act_on_commit: bool = True
    """A programme's stages act on the events this process commits as soon as they commit,
    rather than once the broker brings them back (its delivery then finds them done);
    events other processes commit reach them through the broker either way. Off: the
    broker's delivery only (a stage then runs a broker round trip behind its event)."""
    kafka_session_timeout_ms: int = 6000
    max_requests_in_progress: int = Field(default=128, ge=0)
    """Requests one process serves at once; beyond it a request is refused at once with
    503 and ``Retry-After: 1`` instead of queueing (0: no limit). The probes, ``/metrics``
    and oversight's event stream are never refused."""
    broker_startup_wait_seconds: float = Field(default=60.0, ge=0)
    """How long a starting service waits for the broker before it gives up: one restarted
    while the broker is away (restarting itself) comes up once it is back."""
    catalogue_path: Path | None = None
    """A programme catalogue (JSON) to load instead of the service's default one."""
    checkpoint_every_events: int = 1000
    checkpoint_every_seconds: float = 5.0
    """A checkpoint seals the log every so many new events, or this often with anything new."""
    checkpoint_signing_key: SecretStr | None = None
    """The Ed25519 key checkpoints are signed with: standard base64 of its 32-byte seed."""
    checkpoint_key_id: str | None = None
    checkpoint_key_valid_from: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    treasury_url: str | None = None
    """A treasury's payouts endpoint (``POST`` pays, with the payout id as its
    Idempotency-Key; ``GET {url}/{payout id}`` says whether it paid). None: the service's
    own ledger pays, in the payout stage's transaction."""
    treasury_timeout_seconds: float = 5.0
    payout_max_attempts: int = 5
    """Failed attempts at a voucher redemption's payout over the network before it waits
    for an officer (a fund's tranche has no failed status: it is asked for until paid, or
    until an officer cancels the investment)."""
    payout_first_backoff_seconds: float = 1.0
    """The wait after a payout's first failure; it doubles with each (at most a minute)."""
    support_policy_path: Path | None = None
    """The cross-programme support policy (JSON) to apply instead of the packaged default."""
    checkpoint_retired_keys: list[RetiredKey] = []
    """Keys this service signed with before the current one, still published at ``GET
    /v1/keys`` so that older checkpoints verify: ``{"key_id", "public_key" (standard base64
    of the 32 raw bytes), "valid_from"}`` each, as a JSON list."""
    checkpoint_keys: list[str] = []
    """Where a reader of checkpoints (oversight) finds the services' public keys: ``GET
    /v1/keys`` documents, by URL or file (JSON list). Empty: the development key."""
    voucher_catalogue_path: Path | None = None
    fund_catalogue_path: Path | None = None
    """The catalogues oversight reads budgets and fund capacities from (default: packaged)."""
    stuck_after_seconds: float = 900.0
    """Oversight lists an open application as stuck after this long in one status."""

    migrate_on_start: bool | None = None
    """Whether a starting service brings its schema to the head revision itself. Unset:
    yes in development, no in production, where the migration job (``incentives migrate
    --service <name>``) does it and a service on another revision refuses to start."""

    @property
    def in_production(self) -> bool:
        return self.environment == "production"

    def migrates_on_start(self) -> bool:
        if self.migrate_on_start is None:
            return not self.in_production
        return self.migrate_on_start

    def require_service_settings(self) -> None:
        """What every service needs, asked before it starts: in production it refuses to
        start without them. Each command asks only for what it uses (``incentives topics``
        needs the broker, not a secret)."""
        if not self.uses_oidc:
            self.resolved_jwt_secret()
        self.resolved_database_url()

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        if self.in_production:
            raise ValueError("INCENTIVES_DATABASE_URL must be set in production")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{self.state_dir.resolve() / self.service}.db"

    def signing_seed(self) -> bytes:
        """The checkpoint-signing key's seed: from settings, or in development a key of its
        own in ``state_dir``. Asked only by services that seal checkpoints."""
        if self.checkpoint_signing_key is None and self.environment == "production":
            raise ValueError("INCENTIVES_CHECKPOINT_SIGNING_KEY must be set in production")
        if self.checkpoint_signing_key is not None:
            seed = base64.b64decode(self.checkpoint_signing_key.get_secret_value(), validate=True)
            if len(seed) != 32:
                raise ValueError("INCENTIVES_CHECKPOINT_SIGNING_KEY is not a 32-byte Ed25519 seed")
            return seed
        return dev_signing_seed(self.state_dir)

    def resolved_jwt_secret(self) -> str:
        if self.in_production and (
            self.jwt_secret is None or len(self.jwt_secret.get_secret_value()) < 32
        ):
            raise ValueError(
                "INCENTIVES_JWT_SECRET (32+ characters) must be set in production, "
                "or INCENTIVES_OIDC_ISSUER and INCENTIVES_OIDC_JWKS_URL"
            )
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        return dev_secret(self.state_dir)

    @property
    def uses_oidc(self) -> bool:
        """Tokens come from an identity provider's key set, not a shared secret."""
        return self.oidc_jwks_url is not None

    @model_validator(mode="after")
    def _security_complete(self) -> ServiceSettings:
        """Security settings that cannot work are refused when the settings load."""
        if self.kafka_security_protocol == "SASL_SSL" and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "INCENTIVES_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs INCENTIVES_KAFKA_SASL_USERNAME "
                "and INCENTIVES_KAFKA_SASL_PASSWORD"
            )
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise ValueError("INCENTIVES_KAFKA_SSL_KEYFILE needs INCENTIVES_KAFKA_SSL_CERTFILE")
        if (self.oidc_issuer is None) != (self.oidc_jwks_url is None):
            raise ValueError(
                "set both INCENTIVES_OIDC_ISSUER and INCENTIVES_OIDC_JWKS_URL, or neither"
            )
        return self
