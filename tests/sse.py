"""A real Server-Sent Events client for the tests, over raw asyncio sockets.

Nothing is read from the socket unless a test asks for it, so a test decides exactly how many
bytes the client has taken (to cut a connection mid-frame) and can stop reading altogether (a
slow subscriber, with a small ``SO_RCVBUF``). HTTP/1.1 with chunked transfer decoding; frames
are parsed by the WhatWG rules (lines end in CRLF, LF or CR; ``:`` starts a comment; one space
after the colon is dropped; ``data`` lines join with ``\\n``; a blank line ends a frame; the last
event id is committed when a frame ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

TCP_CLOSE = 7
TCP_CLOSE_WAIT = 8


@dataclass
class Frame:
    """The lines of one block of the stream, up to the blank line that ends it."""

    id: str | None = None
    event: str | None = None
    data_lines: list[str] = field(default_factory=list)
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    raw: bytes = b""

    @property
    def is_event(self) -> bool:
        """Dispatched to an EventSource listener (it has data)."""
        return bool(self.data_lines)

    @property
    def type(self) -> str:
        return self.event or "message"

    @property
    def data(self) -> str:
        return "\n".join(self.data_lines)

    def json(self) -> Any:
        return json.loads(self.data)


class FrameParser:
    """Incremental event-stream parser: ``feed`` bytes, get the frames they complete."""

    def __init__(self) -> None:
        self.buffer = bytearray()  # the current frame's bytes, then the unparsed tail
        self.parsed = 0  # how much of the buffer has been split into lines
        self.current = Frame()
        self.last_event_id = ""
        self.started = False

    @property
    def pending(self) -> bytes:
        """Bytes of a frame begun but not ended (what a cut mid-frame throws away)."""
        return bytes(self.buffer)

    def feed(self, data: bytes) -> list[Frame]:
        self.buffer += data
        frames: list[Frame] = []
        frame_start = 0
        position = self.parsed
        while True:
            cr = self.buffer.find(b"\r", position)
            lf = self.buffer.find(b"\n", position)
            ends = [index for index in (cr, lf) if index >= 0]
            if not ends:
                break
            end = min(ends)
            if self.buffer[end] == 0x0D:
                if end + 1 >= len(self.buffer):
                    break  # a CR at the end: wait to see whether an LF follows
                following = end + 2 if self.buffer[end + 1] == 0x0A else end + 1
            else:
                following = end + 1
            line = bytes(self.buffer[position:end])
            position = following
            frame = self._line(line, bytes(self.buffer[frame_start:following]))
            if frame is not None:
                frames.append(frame)
                frame_start = following
        del self.buffer[:frame_start]
        self.parsed = position - frame_start
        return frames

    def _line(self, raw_line: bytes, raw_frame: bytes) -> Frame | None:
        if not self.started:
            self.started = True
            raw_line = raw_line.removeprefix(b"\xef\xbb\xbf")
        text = raw_line.decode("utf-8", "replace")
        frame = self.current
        if text == "":
            frame.raw = raw_frame
            self.current = Frame()
            if frame.id is not None:
                self.last_event_id = frame.id
            return frame
        name, colon, value = text.partition(":")
        if colon and name == "":
            frame.comments.append(value.removeprefix(" "))
            return None
        value = value.removeprefix(" ")
        if name == "data":
            frame.data_lines.append(value)
        elif name == "event":
            frame.event = value
        elif name == "id":
            if "\0" not in value:
                frame.id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            frame.retry = int(value)
        return None


def _settle(future: asyncio.Future[None]) -> None:
    """A reader callback may run again before its waiter resumes: settle the future once."""
    if not future.done():
        future.set_result(None)


class ChunkDecoder:
    """Incremental ``Transfer-Encoding: chunked`` decoder."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.remaining = -1  # -1: expecting a size line; -2: expecting the CRLF after data
        self.done = False
        self.in_trailer = False

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out = bytearray()
        while not self.done:
            if self.in_trailer:
                end = self.buffer.find(b"\r\n")
                if end < 0:
                    break
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                if line == b"":
                    self.done = True
            elif self.remaining == -1:
                end = self.buffer.find(b"\r\n")
                if end < 0:
                    break
                size_text = bytes(self.buffer[:end]).split(b";", 1)[0].strip()
                del self.buffer[: end + 2]
                size = int(size_text, 16)
                if size == 0:
                    self.in_trailer = True
                else:
                    self.remaining = size
            elif self.remaining == -2:
                if len(self.buffer) < 2:
                    break
                if bytes(self.buffer[:2]) != b"\r\n":
                    raise ValueError(f"bad chunk ending: {bytes(self.buffer[:2])!r}")
                del self.buffer[:2]
                self.remaining = -1
            else:
                if not self.buffer:
                    break
                take = bytes(self.buffer[: self.remaining])
                del self.buffer[: len(take)]
                out += take
                self.remaining -= len(take)
                if self.remaining == 0:
                    self.remaining = -2
        return bytes(out)


async def wait_ready(client: httpx.AsyncClient, seconds: float = 10.0) -> None:
    """Until ``/readyz`` answers 200: before that a stream gets the not-ready answer (200,
    ``retry:``, end), which is right for an EventSource but not what most tests are about."""
    last = ""
    try:
        async with asyncio.timeout(seconds):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    response = await client.get("/readyz")
                    if response.status_code == 200:
                        return
                    last = response.text
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not ready within {seconds} s: {last}") from None


def query_string(params: Iterable[tuple[str, str | int]]) -> str:
    return urlencode([(name, str(value)) for name, value in params])


class SseClient:
    """One HTTP/1.1 GET of an event stream over a socket of its own."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.parser = FrameParser()
        self.frames: list[Frame] = []  # every frame so far
        self.unread: deque[Frame] = deque()  # frames not yet handed out by next_frame()
        self.body = bytearray()  # the decoded body so far
        self.raw_received = 0  # socket bytes read after the header
        self.ended = False  # the response is over (end of the body or of the connection)
        self.clean_end = False  # ... by its own framing: the last chunk, or Content-Length
        self.reset = False  # the connection was reset
        self.eof = False  # the peer closed the connection
        self._chunks: ChunkDecoder | None = None
        self._length: int | None = None
        self._closed = False

    # ------------------------------------------------------------------ opening

    @classmethod
    async def open(
        cls,
        base_url: str,
        path: str,
        *,
        token: str | None = None,
        token_in_query: bool = False,
        last_event_id: str | int | None = None,
        last_event_id_query: str | int | None = None,
        params: Sequence[tuple[str, str | int]] = (),
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
        seconds: float = 5.0,
    ) -> SseClient:
        """Connect, send the request and read the status line and headers."""
        parts = urlsplit(base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        query = list(params)
        if token is not None and token_in_query:
            query.append(("access_token", token))
        if last_event_id_query is not None:
            query.append(("last_event_id", last_event_id_query))
        target = path + ("?" + query_string(query) if query else "")
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {host}:{port}",
            "Accept: text/event-stream",
            "Cache-Control: no-cache",
        ]
        if token is not None and not token_in_query:
            lines.append(f"Authorization: Bearer {token}")
        if last_event_id is not None:
            lines.append(f"Last-Event-ID: {last_event_id}")
        lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        client = cls(sock)
        try:
            async with asyncio.timeout(seconds):
                await client.loop.sock_connect(sock, (host, port))
                await client.loop.sock_sendall(sock, request)
                await client._read_head()
        except BaseException:
            client.abort()
            raise
        return client

    async def _read_head(self) -> None:
        head = bytearray()
        while b"\r\n\r\n" not in head:
            data = await self.loop.sock_recv(self.sock, 65536)
            if not data:
                raise ConnectionError(f"connection closed before the response head: {head!r}")
            head += data
        end = head.index(b"\r\n\r\n")
        lines = bytes(head[:end]).decode("latin-1").split("\r\n")
        version, status, *_ = lines[0].split(" ", 2)
        assert version.startswith("HTTP/1."), lines[0]
        self.status = int(status)
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.append((name.strip().lower(), value.strip()))
        encoding = (self.header("transfer-encoding") or "").lower()
        if "chunked" in encoding:
            self._chunks = ChunkDecoder()
        elif self.header("content-length") is not None:
            self._length = int(self.header("content-length") or "0")
        if self.status in (204, 304) or (100 <= self.status < 200):
            self._length = 0
        if self._length == 0:
            self.ended = self.clean_end = True
        self._take(bytes(head[end + 4 :]))

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name.lower()]
        return ", ".join(values) if values else None

    # ------------------------------------------------------------------ reading

    def _take(self, data: bytes) -> None:
        if not data or self.clean_end:
            return
        self.raw_received += len(data)
        if self._chunks is not None:
            body = self._chunks.feed(data)
            if self._chunks.done:
                self.ended = self.clean_end = True
        elif self._length is not None:
            body = data[: self._length - len(self.body)]
            if len(self.body) + len(body) >= self._length:
                self.ended = self.clean_end = True
        else:
            body = data
        self.body += body
        frames = self.parser.feed(body)
        self.frames.extend(frames)
        self.unread.extend(frames)

    async def read_raw(self, max_bytes: int = 65536, seconds: float = 5.0) -> int:
        """One ``recv`` of at most ``max_bytes`` socket bytes, parsed; 0 at the end."""
        if self.ended:
            return 0
        try:
            data = await self._recv(max_bytes, seconds)
        except (ConnectionResetError, BrokenPipeError):
            self.ended = self.reset = True
            return 0
        if not data:
            self.ended = self.eof = True
            return 0
        self._take(data)
        return len(data)

    async def _recv(self, max_bytes: int, seconds: float) -> bytes:
        """Wait (at most ``seconds``) until the socket is readable, then read it.

        Not ``asyncio.timeout`` around ``loop.sock_recv``: a timeout that fires after the
        bytes were read but before the coroutine resumed would drop them, and the stream
        would look corrupt. Waiting for readability consumes nothing, so its timeout loses
        nothing.
        """
        async with asyncio.timeout(seconds):
            while True:
                readable = self.loop.create_future()
                self.loop.add_reader(self.sock.fileno(), _settle, readable)
                try:
                    await readable
                finally:
                    self.loop.remove_reader(self.sock.fileno())
                try:
                    return self.sock.recv(max_bytes)
                except BlockingIOError:
                    continue  # woken for nothing: wait again

    async def next_frame(self, seconds: float = 5.0) -> Frame | None:
        """The next frame not handed out yet; None once the response has ended."""
        async with asyncio.timeout(seconds):
            while not self.unread:
                if self.ended:
                    return None
                await self.read_raw()
        return self.unread.popleft()

    async def next_event(self, seconds: float = 5.0) -> Frame | None:
        """The next frame with data (skipping ``retry:`` and comments); None at the end."""
        async with asyncio.timeout(seconds):
            while True:
                frame = await self.next_frame(seconds=seconds)
                if frame is None or frame.is_event:
                    return frame

    async def events(self, count: int, seconds: float = 5.0) -> list[Frame]:
        """Exactly ``count`` more event frames; fails if the response ends first."""
        events: list[Frame] = []
        async with asyncio.timeout(seconds):
            while len(events) < count:
                frame = await self.next_event(seconds=seconds)
                assert frame is not None, (
                    f"the stream ended after {len(events)} of {count} events: "
                    f"{[f.id for f in events]}"
                )
                events.append(frame)
        return events

    async def events_through(self, seq: int, seconds: float = 5.0) -> list[Frame]:
        """Event frames up to and including the one with ``id`` >= ``seq``."""
        events: list[Frame] = []
        async with asyncio.timeout(seconds):
            while True:
                frame = await self.next_event(seconds=seconds)
                assert frame is not None, f"the stream ended before seq {seq}: {events}"
                events.append(frame)
                if frame.id is not None and frame.id.isdigit() and int(frame.id) >= seq:
                    return events

    async def rest(self, seconds: float = 5.0) -> list[Frame]:
        """Every remaining frame, reading until the response ends."""
        frames: list[Frame] = []
        async with asyncio.timeout(seconds):
            while (frame := await self.next_frame(seconds=seconds)) is not None:
                frames.append(frame)
        return frames

    async def read_body(self, seconds: float = 5.0) -> bytes:
        """The whole body of a response that ends (an error, a 204, a not-ready answer)."""
        async with asyncio.timeout(seconds):
            while not self.ended:
                await self.read_raw()
        return bytes(self.body)

    async def json(self, seconds: float = 5.0) -> Any:
        return json.loads(await self.read_body(seconds=seconds))

    # ------------------------------------------------------------------ the socket

    def tcp_state(self) -> int:
        """The kernel's TCP state of this socket (Linux ``TCP_INFO``), read without reading."""
        info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        return int(struct.unpack("B", info[:1])[0])

    def closed_by_peer(self) -> bool:
        """The server closed (FIN) or reset the connection, seen without reading from it."""
        return self.tcp_state() in (TCP_CLOSE, TCP_CLOSE_WAIT)

    def abort(self) -> None:
        """Vanish abruptly: reset the connection (RST), dropping whatever is unread."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        """Go away politely (FIN)."""
        if self._closed:
            return
        self._closed = True
        self.sock.close()

    async def __aenter__(self) -> SseClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.abort()
