"""Drivers run operations (see ``steps``): one with blocking calls, one with awaits.

They are the only code that differs between the sync and the async client, besides the
entry and exit of the context managers; the adapters below turn a core's operations into
the methods of the classes people use.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Iterator,
)
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast

import httpx

from service.client.steps import Acquire, Close, Emit, Feed, Op, Read, Send, Sleep, Step, Wait

T = TypeVar("T")
C = TypeVar("C")
P = ParamSpec("P")


def _returning(op: Op[T]) -> Feed[T]:
    """``op`` as a feed of one item, its result: each driver then has a single loop."""
    yield Emit((yield from op))


def _advance(feed: Feed[T], value: Any, error: BaseException | None) -> Step | Emit[T] | None:
    """The feed's next step, given the outcome of the previous one; ``None`` at its end."""
    try:
        return feed.throw(error) if error is not None else feed.send(value)
    except StopIteration:
        return None


class SyncDriver:
    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    @staticmethod
    def lock() -> threading.Lock:
        return threading.Lock()

    @staticmethod
    def signal() -> threading.Event:
        return threading.Event()

    def run(self, op: Op[T]) -> T:
        with contextlib.closing(self.iterate(_returning(op))) as results:
            return next(results)

    def iterate(self, feed: Feed[T]) -> Generator[T, None, None]:
        bodies: dict[httpx.Response, Iterator[bytes]] = {}
        try:
            value, error = None, None
            while (step := _advance(feed, value, error)) is not None:
                value, error = None, None
                if isinstance(step, Emit):
                    yield step.value
                    continue
                try:
                    value = self._perform(step, bodies)
                except httpx.TransportError as failure:
                    error = failure
        finally:
            feed.close()
            for response in list(bodies):
                self._close(response, bodies)

    def _perform(self, step: Step, bodies: dict[httpx.Response, Iterator[bytes]]) -> Any:
        match step:
            case Send(request, stream):
                response = self.http.send(request, stream=stream)
                if stream:
                    bodies[response] = response.iter_bytes()
                return response
            case Read(response):
                return next(bodies[response], b"")
            case Close(response):
                self._close(response, bodies)
            case Sleep(seconds):
                time.sleep(seconds)
            case Wait(signal, seconds):
                cast(threading.Event, signal).wait(seconds)
            case Acquire(lock):
                cast(threading.Lock, lock).acquire()
        return None

    @staticmethod
    def _close(response: httpx.Response, bodies: dict[httpx.Response, Iterator[bytes]]) -> None:
        body = bodies.pop(response, None)
        if isinstance(body, Generator):
            body.close()
        response.close()


class AsyncDriver:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    @staticmethod
    def lock() -> asyncio.Lock:
        return asyncio.Lock()

    @staticmethod
    def signal() -> asyncio.Event:
        return asyncio.Event()

    async def run(self, op: Op[T]) -> T:
        async with contextlib.aclosing(self.iterate(_returning(op))) as results:
            return await anext(results)

    async def iterate(self, feed: Feed[T]) -> AsyncGenerator[T, None]:
        bodies: dict[httpx.Response, AsyncIterator[bytes]] = {}
        try:
            value, error = None, None
            while (step := _advance(feed, value, error)) is not None:
                value, error = None, None
                if isinstance(step, Emit):
                    yield step.value
                    continue
                try:
                    value = await self._perform(step, bodies)
                except httpx.TransportError as failure:
                    error = failure
        finally:
            feed.close()
            for response in list(bodies):
                await self._close(response, bodies)

    async def _perform(self, step: Step, bodies: dict[httpx.Response, AsyncIterator[bytes]]) -> Any:
        match step:
            case Send(request, stream):
                response = await self.http.send(request, stream=stream)
                if stream:
                    bodies[response] = response.aiter_bytes()
                return response
            case Read(response):
                return await anext(bodies[response], b"")
            case Close(response):
                await self._close(response, bodies)
            case Sleep(seconds):
                await asyncio.sleep(seconds)
            case Wait(signal, seconds):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cast(asyncio.Event, signal).wait(), seconds)
            case Acquire(lock):
                await cast(asyncio.Lock, lock).acquire()
        return None

    @staticmethod
    async def _close(
        response: httpx.Response, bodies: dict[httpx.Response, AsyncIterator[bytes]]
    ) -> None:
        body = bodies.pop(response, None)
        if isinstance(body, AsyncGenerator):
            await body.aclose()
        await response.aclose()


# ---------------------------------------------------------------------- adapters


class SyncRunner(Generic[C]):
    """A sync class that exposes the operations of a core ``C``."""

    _core: C
    _driver: SyncDriver


class AsyncRunner(Generic[C]):
    """An async class that exposes the operations of a core ``C``."""

    _core: C
    _driver: AsyncDriver


def blocking(
    build: Callable[Concatenate[C, P], Op[T]],
) -> Callable[Concatenate[SyncRunner[C], P], T]:
    """A method that runs the core's operation and returns its result."""

    @functools.wraps(build)
    def method(self: SyncRunner[C], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._driver.run(build(self._core, *args, **kwargs))

    return method


def iterating(
    build: Callable[Concatenate[C, P], Feed[T]],
) -> Callable[Concatenate[SyncRunner[C], P], Iterator[T]]:
    """A method that returns an iterator over the items of the core's operation."""

    @functools.wraps(build)
    def method(self: SyncRunner[C], /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._driver.iterate(build(self._core, *args, **kwargs))

    return method


def awaitable(
    build: Callable[Concatenate[C, P], Op[T]],
) -> Callable[Concatenate[AsyncRunner[C], P], Coroutine[Any, Any, T]]:
    """A coroutine method that runs the core's operation and returns its result."""

    @functools.wraps(build)
    async def method(self: AsyncRunner[C], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._driver.run(build(self._core, *args, **kwargs))

    return method


def async_iterating(
    build: Callable[Concatenate[C, P], Feed[T]],
) -> Callable[Concatenate[AsyncRunner[C], P], AsyncIterator[T]]:
    """A method that returns an async iterator over the items of the core's operation."""

    @functools.wraps(build)
    def method(self: AsyncRunner[C], /, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        return self._driver.iterate(build(self._core, *args, **kwargs))

    return method
