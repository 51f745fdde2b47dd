"""A minimal pure-asyncio SSE broadcast server: the Python ceiling for ``bench/fanout.py``.

No framework, no database, no routing beyond the method: it is the least work a Python process
can do to hand one event to many SSE connections, so the fan-out benchmark runs the same load
against it next to taskstream.

* ``GET <any path>``: answers ``200`` with the SSE headers and a chunked body, writes
  ``retry:`` at once and registers the connection's transport.
* ``POST <any path>`` (``/publish``): the request body becomes one SSE event, framed once as
  one HTTP chunk (``id: n`` / ``event: progress`` / ``data: <body>``), then one synchronous loop
  of ``transport.write`` hands the same bytes to every registered transport; the POST is
  answered ``204`` after that loop. With ``--coalesce`` the loop runs once per event-loop
  iteration for the events of every POST read in it (one write of all of them per stream).
* A transport whose unsent bytes exceed ``--buffer-bytes`` is aborted, like taskstream's
  slow-subscriber cut-off (without it a stalled client would grow the process without bound).

The request parser is only as complete as the benchmark's clients need (sseload, publish.py):
HTTP/1.1 keep-alive, ``Content-Length`` bodies, pipelining.

    python bench/broadcast_server.py --port 8001 [--loop auto|asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from typing import cast

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"X-Accel-Buffering: no\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
)
RETRY = b"retry: 2000\n\n"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_HEAD = 65536


def chunk(body: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(body), body)


class Broadcaster:
    """The registered streams and the event counter."""

    def __init__(self, buffer_bytes: int, *, coalesce: bool = False) -> None:
        self.buffer_bytes = buffer_bytes
        self.coalesce = coalesce
        self.streams: set[asyncio.Transport] = set()
        self.seq = 0
        self.cut_off = 0
        self.pending: list[bytes] = []

    def publish(self, data: bytes) -> None:
        self.seq += 1
        frame = chunk(b"id: %d\nevent: progress\ndata: %b\n\n" % (self.seq, data))
        if not self.coalesce:
            self.write_all(frame)
            return
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.append(frame)

    def flush(self) -> None:
        """--coalesce: the frames of every POST read in one loop iteration, in one write each."""
        frames = b"".join(self.pending)
        self.pending.clear()
        self.write_all(frames)

    def write_all(self, frame: bytes) -> None:
        limit = self.buffer_bytes
        slow: list[asyncio.Transport] = []
        for transport in self.streams:
            transport.write(frame)
            if transport.get_write_buffer_size() > limit:
                slow.append(transport)
        for transport in slow:
            self.cut_off += 1
            self.streams.discard(transport)
            transport.abort()


class Connection(asyncio.Protocol):
    __slots__ = ("broadcaster", "buffer", "streaming", "transport")

    def __init__(self, broadcaster: Broadcaster) -> None:
        self.broadcaster = broadcaster
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.broadcaster.streams.discard(self.transport)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.streaming:
            return  # a stream's client has nothing more to say
        self.buffer += data
        while self.transport is not None and not self.streaming:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self._refuse()
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    try:
                        length = int(value.strip())
                    except ValueError:
                        self._refuse()
                        return
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method = head.split(" ", 1)[0]
            if method == "GET":
                self.streaming = True
                self.buffer = b""
                self.transport.write(SSE_HEAD + chunk(RETRY))
                self.broadcaster.streams.add(self.transport)
            elif method == "POST":
                self.broadcaster.publish(body)
                self.transport.write(NO_CONTENT)
            else:
                self._refuse()

    def _refuse(self) -> None:
        if self.transport is not None:
            self.transport.write(BAD_REQUEST)
            self.transport.close()


async def serve(host: str, port: int, buffer_bytes: int, coalesce: bool) -> None:
    broadcaster = Broadcaster(buffer_bytes, coalesce=coalesce)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(broadcaster), host, port, backlog=4096, reuse_address=True
    )
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    print(f"broadcast server on http://{host}:{port}", flush=True)
    async with server:
        await stopped.wait()
        server.close()
        for transport in list(broadcaster.streams):
            with contextlib.suppress(Exception):
                transport.write(b"0\r\n\r\n")
                transport.close()
    print(
        f"published {broadcaster.seq} events; cut off {broadcaster.cut_off} slow streams",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument(
        "--buffer-bytes",
        type=int,
        default=262_144,
        help="unsent bytes a stream may hold before it is cut off (taskstream's default)",
    )
    p.add_argument(
        "--coalesce",
        action="store_true",
        help="not the issue's ceiling design: write the events of all POSTs read in one loop "
        "iteration together, one write per stream (what taskstream's listener does)",
    )
    p.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop; auto: uvloop when installed, as uvicorn does",
    )
    args = p.parse_args(argv)
    main_task = serve(args.host, args.port, args.buffer_bytes, args.coalesce)
    if args.loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if args.loop == "uvloop":
                raise
        else:
            uvloop.run(main_task)
            return 0
    asyncio.run(main_task)
    return 0


if __name__ == "__main__":
    sys.exit(main())
