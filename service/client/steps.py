"""The steps an operation asks its driver to take.

Every operation of the client (request building, retries, paging, stream resumption, the
tracker) is written once, as a generator that yields these steps and is sent their outcomes.
A driver performs them: ``drivers.SyncDriver`` with blocking calls, ``drivers.AsyncDriver``
with awaits. That is how the sync and async clients share all their logic.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import httpx

T = TypeVar("T")


class Signal(Protocol):
    """What ``threading.Event`` and ``asyncio.Event`` have in common."""

    def set(self) -> None: ...

    def clear(self) -> None: ...


class Lock(Protocol):
    """What ``threading.Lock`` and ``asyncio.Lock`` have in common (acquiring is a step)."""

    def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Send:
    """Send a request; the outcome is the response, or the ``httpx.TransportError`` raised.

    With ``stream`` the body is left unread: take it with ``Read`` steps.
    """

    request: httpx.Request
    stream: bool = False


@dataclass(frozen=True, slots=True)
class Read:
    """The next piece of a streamed body; ``b""`` at its end."""

    response: httpx.Response


@dataclass(frozen=True, slots=True)
class Close:
    """Release a streamed response before its end (the driver closes leftovers anyway)."""

    response: httpx.Response


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Wait:
    """Until ``signal`` is set or ``seconds`` pass (``None``: no time limit)."""

    signal: Signal
    seconds: float | None


@dataclass(frozen=True, slots=True)
class Acquire:
    lock: Lock


@dataclass(frozen=True, slots=True)
class Emit(Generic[T]):
    """An item for the caller of an iterating operation; the outcome is ``None``."""

    value: T


Step = Send | Read | Close | Sleep | Wait | Acquire

Op = Generator[Step, Any, T]
"""An operation that returns a ``T``."""

Feed = Generator[Step | Emit[T], Any, None]
"""An operation that hands out ``T`` items one by one."""


def read_body(response: httpx.Response) -> Op[bytes]:
    """The rest of a streamed body."""
    parts: list[bytes] = []
    while part := (yield Read(response)):
        parts.append(part)
    return b"".join(parts)
