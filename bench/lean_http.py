"""Just enough HTTP/1.1 for the load generator: keep-alive connections, JSON bodies.

The bench shares two cores with the service it measures. httpx spent about half
as much CPU per request as the service spent answering it, so the client's own
cost showed up as service slowness. This client sends prepared bytes and reads
``Content-Length`` framed answers (all the service sends), nothing more.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class HTTPError(Exception):
    pass


class LeanClient:
    def __init__(self, host: str, port: int, connections: int) -> None:
        self.host, self.port = host, port
        self._idle: asyncio.LifoQueue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.LifoQueue()
        )
        self._slots = asyncio.Semaphore(connections)

    async def post(self, path: str, body: Any, headers: dict[str, str]) -> tuple[int, bytes]:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            + "\r\n"
        )
        return await self._exchange(head.encode() + payload)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        async with self._slots:
            if not self._idle.empty():
                reader, writer = self._idle.get_nowait()
                try:
                    return await self._on(reader, writer, request)
                except (HTTPError, ConnectionError):
                    # closed by the server while idle (keep-alive timeout): again on a new
                    # one; the bench's POSTs carry Idempotency-Keys, so a resend is safe
                    pass
            reader, writer = await asyncio.open_connection(self.host, self.port)
            return await self._on(reader, writer, request)

    async def _on(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[int, bytes]:
        try:
            writer.write(request)
            status_line = await reader.readline()
            if not status_line:
                raise HTTPError("the server closed the connection")
            status = int(status_line.split(b" ", 2)[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self._idle.put_nowait((reader, writer))
        return status, answer

    async def close(self) -> None:
        while not self._idle.empty():
            _, writer = self._idle.get_nowait()
            writer.close()
