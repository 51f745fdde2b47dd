"""Writing a stream's frames: straight to the socket under uvicorn, through ASGI elsewhere.

Fan-out cost is per event *and* per subscriber, and uvicorn's ASGI ``send`` costs ~15 µs a
call against ~5 µs for ``transport.write``. So, under :class:`HttpProtocol`, a stream's live
part bypasses ``send``: the hub writes each event's pre-chunked bytes to every subscriber's
transport in one synchronous loop, and the transport's unsent-byte count is the slow-subscriber
signal (no queue per subscriber). Under any other server a :class:`QueuedSink` does the same
through ``send``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.stream.frames import Frame

EXTENSION = "taskstream.http_protocol"
"""Key in ``scope["extensions"]`` under which :class:`HttpProtocol` offers itself."""


LINGER_RESET = struct.pack("ii", 1, 0)
"""SO_LINGER on with a zero timeout: closing sends RST and discards the send buffer."""


class Watcher(Protocol):
    """What a stream needs to hear from its connection."""

    def lost(self) -> None:
        """The client went away."""

    def stop(self) -> None:
        """The server is shutting down: end the response now."""


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that lets a stream write to its socket and watch it.

    uvicorn tells the application of a vanished client only through ``receive()``, and of
    shutdown not at all (it waits for open responses, up to its graceful timeout); these hooks
    tell a stream both at once, with no task per stream waiting on ``receive()``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watcher: Watcher | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = cast(dict[str, Any], {EXTENSION: self})

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.watcher is not None:
            self.watcher.lost()

    def shutdown(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        super().shutdown()


class Sink(Protocol):
    """Where a subscriber's frames go once it is live."""

    def write(self, frames: Sequence[Frame], joined: bytes | None = None) -> bool:
        """Queue ``frames`` for the client (``joined``: their chunks, already joined); False
        when the client is too far behind."""

    def close(self) -> None:
        """Drop what is unsent and let the handler finish."""

    async def drained(self) -> None:
        """Until the client has taken most of what was written (or is gone)."""


class DirectSink:
    """Writes chunks straight to the transport of a chunked HTTP/1.1 response."""

    __slots__ = ("flow", "limit", "transport")

    def __init__(self, protocol: HttpProtocol, limit: int) -> None:
        self.transport = protocol.transport
        self.flow = protocol.flow
        self.limit = limit
        # The transport pauses (and ``drained`` waits) exactly when ``write`` says "behind".
        self.transport.set_write_buffer_limits(high=limit)

    async def drained(self) -> None:
        # uvicorn's flow control: paused above the transport's high-water mark, resumed below
        # its low-water mark, and on connection loss.
        await self.flow.drain()

    def write(self, frames: Sequence[Frame], joined: bytes | None = None) -> bool:
        transport = self.transport
        if transport.is_closing():
            return False
        if joined is not None:
            transport.write(joined)
        elif len(frames) == 1:
            transport.write(frames[0].chunk)
        else:
            transport.write(b"".join(frame.chunk for frame in frames))
        return transport.get_write_buffer_size() <= self.limit

    def close(self) -> None:
        """Abort with a reset: the unsent bytes, ours and the kernel's (megabytes on a fast
        link), are dropped at once rather than trickled to a client that is behind anyway."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        self.transport.abort()


class QueuedSink:
    """Collects frames for the stream's handler to ``send``; used when the socket is not ours.

    ``wake`` is the subscriber's: calling it is how the handler learns there is work.
    """

    __slots__ = ("closed", "limit", "pending", "pending_bytes", "wake")

    def __init__(self, limit: int, wake: Callable[[], None]) -> None:
        self.limit = limit
        self.wake = wake
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.closed = False

    def write(self, frames: Sequence[Frame], joined: bytes | None = None) -> bool:
        if self.closed:
            return False
        for frame in frames:
            self.pending.append(frame.body)
            self.pending_bytes += len(frame.body)
        self.wake()
        return self.pending_bytes <= self.limit

    async def drained(self) -> None:
        """The handler ``send``s what was collected before it asks: nothing is held back."""

    def take(self) -> bytes:
        body = b"".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        return body

    def close(self) -> None:
        self.closed = True
        self.take()


def http_protocol(scope: Any) -> HttpProtocol | None:
    """The connection's protocol when the stream may write to its socket directly."""
    extensions = scope.get("extensions") or {}
    protocol = extensions.get(EXTENSION)
    if isinstance(protocol, HttpProtocol) and scope.get("http_version") == "1.1":
        return protocol
    return None
