"""Settings from the environment (prefix ``INCENTIVES_``), one model for every service."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.auth import dev_secret


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
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    topic_partitions: int = 8
    jwt_secret: SecretStr | None = None
    relay_batch_size: int = 1000
    kafka_session_timeout_ms: int = 6000
    catalogue_path: Path | None = None
    """A programme catalogue (JSON) to load instead of the service's default one."""
    support_policy_path: Path | None = None
    """The cross-programme support policy (JSON) to apply instead of the packaged default."""

    @model_validator(mode="after")
    def _production_needs_explicit_secrets(self) -> ServiceSettings:
        if self.environment == "production":
            if self.jwt_secret is None or len(self.jwt_secret.get_secret_value()) < 32:
                raise ValueError("INCENTIVES_JWT_SECRET (32+ characters) must be set in production")
            if not self.database_url:
                raise ValueError("INCENTIVES_DATABASE_URL must be set in production")
        return self

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{self.state_dir.resolve() / self.service}.db"

    def resolved_jwt_secret(self) -> str:
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        return dev_secret(self.state_dir)
