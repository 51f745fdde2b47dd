"""A real TCP proxy in front of the service that injects failures.

- ``answer(match, status)``: the proxy answers a request itself (503, 429 ..., or a stream
  that the service is not ready to serve) without forwarding it: the service never sees it;
- ``drop_after_forward(match)``: the request is forwarded, and as soon as the service's
  answer starts (so the work is committed) the client's connection is reset instead of
  relaying it: the client cannot know whether its request took effect;
- ``cut()``: reset every open client connection now (a stream cut mid-flight).

Requests are matched by a prefix of their request line, e.g. ``"POST /v1/tasks/t/events"``.
HTTP/1.1 only, bodies by ``Content-Length`` (what httpx sends), no pipelining (httpx waits for
an answer before it sends the next request on a connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Rule:
    match: str
    times: int
    status: int | None  # None: forward, then drop the connection before the answer
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # None: a problem document


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    drop_on_answer: bool = False

    def abort(self) -> None:
        self.client.transport.abort()
        self.upstream.transport.abort()


class FaultProxy:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rules: list[Rule] = []
        self.requests: list[str] = []  # every request line received
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()  # every handler then ends by itself: its reads fail
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------------ faults

    def answer(
        self,
        match: str,
        status: int = 503,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> None:
        self.rules.append(Rule(match, times, status, headers or {}, body))

    def drop_after_forward(self, match: str, *, times: int = 1) -> None:
        self.rules.append(Rule(match, times, None))

    def cut(self) -> None:
        for connection in list(self.connections):
            connection.abort()

    def seen(self, match: str) -> int:
        """How many requests matched ``match`` (answered, dropped or forwarded)."""
        return sum(line.startswith(match) for line in self.requests)

    def _rule(self, line: str) -> Rule | None:
        for rule in self.rules:
            if rule.times > 0 and line.startswith(rule.match):
                rule.times -= 1
                return rule
        return None

    # ------------------------------------------------------------------ relaying

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            self._handlers.discard(handler)
            return
        connection = _Connection(writer, upstream_writer)
        self.connections.add(connection)
        relay = asyncio.create_task(self._relay(upstream_reader, connection))
        try:
            await self._requests(reader, connection)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            connection.abort()
            self.connections.discard(connection)
            self._handlers.discard(handler)

    async def _requests(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for header in lines[1:]:
                name, _, value = header.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            self.requests.append(lines[0])
            rule = self._rule(lines[0])
            if rule is not None and rule.status is not None:
                connection.client.write(_answer(rule))
                await connection.client.drain()
                continue
            connection.drop_on_answer = rule is not None
            connection.upstream.write(head + body)
            await connection.upstream.drain()

    @staticmethod
    async def _relay(upstream: asyncio.StreamReader, connection: _Connection) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await upstream.read(65536):
                if connection.drop_on_answer:
                    connection.abort()
                    return
                connection.client.write(data)
                await connection.client.drain()
        connection.client.transport.abort()


def _answer(rule: Rule) -> bytes:
    assert rule.status is not None
    headers = {"Content-Type": "application/problem+json", **rule.headers}
    body = rule.body
    if body is None:
        problem = {
            "type": "urn:taskstream:problem:injected",
            "title": "Injected by the fault proxy",
            "status": rule.status,
            "detail": "injected by the fault proxy",
            "code": "rate_limited" if rule.status == 429 else "not_ready",
        }
        body = json.dumps(problem).encode()
    lines = [
        f"HTTP/1.1 {rule.status} Injected",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@contextlib.asynccontextmanager
async def running_proxy(upstream_url: str) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(upstream_url)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
