"""TLS to PostgreSQL, against a throwaway server with a certificate of a test CA.

The module starts its own PostgreSQL cluster (initdb, as the ``postgres`` OS user, in a
temporary directory, on a free port of 127.0.0.1) with ``ssl = on`` and a pg_hba.conf
that admits TLS connections only (``hostssl``); it is stopped and removed at the end. The
machine's own cluster (5432) is not touched. The engines are made by the services' own
``create_service_engine`` from settings, as a service in production makes them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import trustme
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.security import create_service_engine
from shared.settings import ServiceSettings
from tests.conftest import free_port

pytestmark = pytest.mark.postgres


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail(f"no PostgreSQL {name} under /usr/lib/postgresql/*/bin", pytrace=False)
    return found[-1]


def _as_postgres(*command: str) -> list[str]:
    """Run as the ``postgres`` OS user when we are root (initdb refuses root)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@dataclass
class TlsServer:
    port: int
    ca: Path
    """The CA that signed the server's certificate (issued for 127.0.0.1 only)."""
    other_ca: Path
    """A CA that signed nothing of this server's."""

    def settings(self, mode: str, root: Path | None, host: str = "127.0.0.1") -> ServiceSettings:
        return ServiceSettings(
            service="voucher",
            database_url=f"postgresql+asyncpg://postgres@{host}:{self.port}/postgres",
            database_ssl_mode=mode,  # type: ignore[arg-type]
            database_ssl_root_cert=root,
        )


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[TlsServer]:
    home = Path(tempfile.mkdtemp(prefix="incentives-pg-tls-"))
    data = home / "data"
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    (home / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (home / "other-ca.pem").write_bytes(other_ca.cert_pem.bytes())
    port = free_port()
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
    subprocess.run(
        _as_postgres(_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"),
        check=True,
        capture_output=True,
    )
    cert, key = data / "server.crt", data / "server.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    key.write_bytes(server.private_key_pem.bytes())
    key.chmod(0o600)
    if os.geteuid() == 0:
        for path in (cert, key):
            shutil.chown(path, "postgres", "postgres")
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {port}\n"
            f"unix_socket_directories = '{home}'\nssl = on\n"
            "ssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
            "fsync = off\nmax_connections = 20\nshared_buffers = 16MB\n"
        )
    (data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 trust\n")
    ctl = _bin("pg_ctl")
    subprocess.run(
        _as_postgres(ctl, "-D", str(data), "-l", str(home / "log"), "-w", "-t", "30", "start"),
        check=True,
        capture_output=True,
    )
    try:
        yield TlsServer(port, home / "ca.pem", home / "other-ca.pem")
    finally:
        subprocess.run(
            _as_postgres(ctl, "-D", str(data), "-m", "immediate", "-w", "stop"),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(home, ignore_errors=True)


@contextlib.asynccontextmanager
async def engine_of(settings: ServiceSettings) -> AsyncIterator[AsyncEngine]:
    engine = create_service_engine(settings, pool_size=1)
    try:
        yield engine
    finally:
        await engine.dispose()


async def encrypted(engine: AsyncEngine) -> bool:
    async with engine.connect() as connection:
        return bool(
            await connection.scalar(
                sa.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            )
        )


def _causes(error: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


async def test_verify_full_with_the_servers_ca_connects_encrypted(tls_postgres: TlsServer) -> None:
    async with engine_of(tls_postgres.settings("verify-full", tls_postgres.ca)) as engine:
        assert await encrypted(engine)


async def test_verify_full_refuses_a_certificate_of_another_ca(tls_postgres: TlsServer) -> None:
    async with engine_of(tls_postgres.settings("verify-full", tls_postgres.other_ca)) as engine:
        with pytest.raises(Exception) as refused:
            await encrypted(engine)
    assert any(isinstance(e, ssl.SSLCertVerificationError) for e in _causes(refused.value)), (
        refused.value
    )
    assert "certificate verify failed" in str(refused.value)


async def test_verify_full_refuses_a_certificate_for_another_host(tls_postgres: TlsServer) -> None:
    """The certificate names 127.0.0.1: reached as ``localhost`` it is not the server's,
    though the CA signed it; ``require`` (the CA, not the name) accepts it."""
    settings = tls_postgres.settings("verify-full", tls_postgres.ca, host="localhost")
    async with engine_of(settings) as engine:
        with pytest.raises(Exception) as refused:
            await encrypted(engine)
    assert "match" in str(refused.value) or "mismatch" in str(refused.value), refused.value
    settings = tls_postgres.settings("require", tls_postgres.ca, host="localhost")
    async with engine_of(settings) as engine:
        assert await encrypted(engine)


async def test_require_without_a_root_encrypts_and_disable_is_refused_by_the_server(
    tls_postgres: TlsServer,
) -> None:
    async with engine_of(tls_postgres.settings("require", None)) as engine:
        assert await encrypted(engine)
    async with engine_of(tls_postgres.settings("disable", None)) as engine:
        with pytest.raises(Exception, match="no encryption"):
            await encrypted(engine)
