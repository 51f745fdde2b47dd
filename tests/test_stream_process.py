"""Streams against the real command: ``taskstream serve`` in a process of its own.

SIGTERM with streams open must end each of them cleanly and exit 0 in time, keeping every
acknowledged append; a browser's EventSource (the npm ``eventsource`` package, a WhatWG
implementation) must come through a SIGKILL and restart of the server with nothing lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.helpers import assert_ok
from tests.processes import Server, free_port, start_server
from tests.sse import SseClient

JS = Path(__file__).parent / "js"
EXIT_SECONDS = 10


async def append(
    server: Server, task_id: str, n: int, headers: dict[str, str]
) -> dict[str, Any] | None:
    """One progress event; the Event if the server acknowledged it, None if it refused."""
    body = {"type": "progress", "data": {"percent": n % 101, "n": n}}
    try:
        response = await server.client.post(
            f"/v1/tasks/{task_id}/events", json=body, headers=headers
        )
    except httpx.TransportError:
        return None
    if response.status_code != 201:
        assert response.status_code in (503,), response.text  # shutting down: not ready
        return None
    event: dict[str, Any] = response.json()
    return event


# ----------------------------------------------------------------------------- SIGTERM


async def create_tasks(server: Server, ids: list[str]) -> None:
    for task_id in ids:
        response = await server.client.post(
            "/v1/tasks", json={"id": task_id, "kind": "k"}, headers=server.auth()
        )
        assert response.status_code == 201, response.text


class Writers:
    """Appenders running until stopped; what the server acknowledged."""

    def __init__(self, server: Server, tasks: list[str], count: int, flowing_after: int) -> None:
        self.server = server
        self.tasks = tasks
        self.acknowledged: list[dict[str, Any]] = []
        self.flowing = asyncio.Event()
        self.flowing_after = flowing_after
        self.stopping = asyncio.Event()
        self.running = [asyncio.create_task(self._write(seed)) for seed in range(count)]

    async def _write(self, seed: int) -> None:
        rng = random.Random(seed)
        headers = self.server.auth()
        n = 0
        while not self.stopping.is_set():
            event = await append(self.server, rng.choice(self.tasks), n, headers)
            if event is None:
                await asyncio.sleep(0.01)
            else:
                self.acknowledged.append(event)
                if len(self.acknowledged) >= self.flowing_after:
                    self.flowing.set()
            n += 1

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.gather(*self.running, return_exceptions=True)


async def stored_seqs(database_url: str) -> set[int]:
    connection = await asyncpg.connect(database_url)
    try:
        return {row["seq"] for row in await connection.fetch("SELECT seq FROM events")}
    finally:
        await connection.close()


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_ends_every_stream_cleanly_and_exits_0_keeping_acknowledged_appends(
    servers: list[Server], tmp_path: Path, database_url: str, workers: int
) -> None:
    secret = secrets.token_urlsafe(32)
    server = await start_server(servers, tmp_path, database_url, secret, workers=workers)
    tasks = [f"job-{n}" for n in range(4)]
    await create_tasks(server, tasks)
    token = server.token()
    streams: list[SseClient] = []
    writers: Writers | None = None
    try:
        for n in range(12):
            path = "/v1/stream" if n % 3 else f"/v1/tasks/{tasks[n % 4]}/stream"
            client = await SseClient.open(
                server.base_url, path, token=token, token_in_query=n % 2 == 0,
                last_event_id=0 if n % 4 == 1 else None,
            )  # fmt: skip
            streams.append(client)
            assert client.status == 200, await client.read_body()
            # So that a clean end is the terminating 0\r\n\r\n, not just a closed socket.
            assert client.header("transfer-encoding") == "chunked", client.headers
        writers = Writers(server, tasks, count=4, flowing_after=40)
        async with asyncio.timeout(10):
            await writers.flowing.wait()
        for client in streams:  # every stream is flowing when the signal comes
            assert await client.next_event(seconds=10) is not None, (
                f"a stream ended before SIGTERM (clean={client.clean_end}, eof={client.eof}, "
                f"reset={client.reset}): {bytes(client.body)[-300:]!r}\n{server.output()}"
            )

        loop = asyncio.get_running_loop()
        signalled = loop.time()
        server.signal(signal.SIGTERM)
        for client in streams:
            try:
                await client.rest(seconds=EXIT_SECONDS - (loop.time() - signalled))
            except TimeoutError:
                raise AssertionError(
                    f"a stream was still open {EXIT_SECONDS} s after SIGTERM:\n{server.output()}"
                ) from None
            assert client.clean_end, (
                f"a stream did not end with the last chunk (reset={client.reset}, "
                f"eof={client.eof}):\n{server.output()}"
            )
            assert client.parser.pending == b"", f"a frame was cut: {client.parser.pending!r}"
        status = await server.wait(EXIT_SECONDS - (loop.time() - signalled))
        assert status == 0, f"exit status {status}:\n{server.output()}"
    finally:
        if writers is not None:
            await writers.stop()
        for client in streams:
            client.abort()

    assert writers is not None
    stored = await stored_seqs(database_url)
    lost = [event["seq"] for event in writers.acknowledged if event["seq"] not in stored]
    assert not lost, f"acknowledged but not in the table: {lost}"
    for client in streams:
        seqs = [int(frame.id or 0) for frame in client.frames if frame.is_event]
        assert seqs == sorted(set(seqs)), "a stream repeated or reordered events"
        assert set(seqs) <= stored, "a stream sent an event that is not in the table"


# ----------------------------------------------------------------------------- EventSource


class Subscriber:
    """``node tests/js/subscribe.mjs URL``: its JSON lines, as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.records: list[dict[str, Any]] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.records.append(json.loads(line))

    def count(self, kind: str) -> int:
        return sum(1 for record in self.records if record["kind"] == kind)

    def events(self) -> list[dict[str, Any]]:
        return [record for record in self.records if record["kind"] == "event"]

    async def until(self, condition: Any, what: str, seconds: float = 15) -> None:
        try:
            async with asyncio.timeout(seconds):
                while not condition():
                    assert not self.reader.done(), f"the subscriber exited: {self.records}"
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise AssertionError(f"{what}: not within {seconds} s: {self.records[-10:]}") from None

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(5):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


def node_modules() -> None:
    if (JS / "node_modules" / "eventsource").is_dir():
        return
    npm = shutil.which("npm")
    assert npm, "tests/js/node_modules is missing and there is no npm to install it"
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"npm ci in tests/js failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture
async def subscribers() -> AsyncIterator[list[Subscriber]]:
    started: list[Subscriber] = []
    yield started
    for subscriber in started:
        await subscriber.stop()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_eventsource_comes_through_a_sigkill_and_restart_with_every_event_once(
    servers: list[Server], subscribers: list[Subscriber], tmp_path: Path, database_url: str
) -> None:
    node = shutil.which("node")
    assert node is not None
    await asyncio.to_thread(node_modules)
    secret = secrets.token_urlsafe(32)
    port = free_port()
    first = await start_server(servers, tmp_path, database_url, secret, port=port)
    other = await start_server(servers, tmp_path, database_url, secret)  # same database
    headers = first.auth()
    tasks = [f"job-{n}" for n in range(3)]
    for task_id in tasks:
        response = await first.client.post(
            "/v1/tasks", json={"id": task_id, "kind": "k"}, headers=headers
        )
        assert response.status_code == 201, response.text
    counter = iter(range(10**6))

    async def append_some(server: Server, count: int) -> None:
        for _ in range(count):
            n = next(counter)
            event = await append(server, tasks[n % len(tasks)], n, headers)
            assert event is not None, f"append {n} refused:\n{server.output()}"

    url = f"{first.base_url}/v1/stream?access_token={first.token()}"
    process = await asyncio.create_subprocess_exec(
        node, str(JS / "subscribe.mjs"), url, cwd=JS, stdout=subprocess.PIPE
    )
    subscriber = Subscriber(process)
    subscribers.append(subscriber)
    await subscriber.until(lambda: subscriber.count("open") == 1, "open")

    await append_some(first, 10)
    await subscriber.until(lambda: len(subscriber.events()) == 10, "10 live events")

    first.signal(signal.SIGKILL)
    assert await first.wait(5) == -signal.SIGKILL
    await subscriber.until(lambda: subscriber.count("error") >= 1, "the loss noticed")
    await append_some(other, 10)  # while the subscriber's server is down

    await first.start()  # the same port
    await subscriber.until(lambda: subscriber.count("open") >= 2, "reconnected", seconds=10)
    await append_some(first, 5)
    await append_some(other, 5)

    expected = (await _all_events(other, headers))[len(tasks) :]
    assert len(expected) == 30
    await subscriber.until(
        lambda: len(subscriber.events()) >= len(expected), "every event", seconds=10
    )
    got = subscriber.events()
    assert [int(record["lastEventId"]) for record in got] == [e["seq"] for e in expected], got
    for record, event in zip(got, expected, strict=True):
        assert record["type"] == event["type"], record
        assert json.loads(record["data"]) == event, record
    # Nothing more, in particular no late duplicate: the next event is the next one seen.
    marker = await append(first, tasks[0], -1, headers)
    assert marker is not None
    await subscriber.until(lambda: len(subscriber.events()) > len(expected), "the marker")
    assert int(subscriber.events()[len(expected)]["lastEventId"]) == marker["seq"]


async def _all_events(server: Server, headers: dict[str, str]) -> list[dict[str, Any]]:
    page = assert_ok(
        await server.client.get("/v1/events", params={"limit": 10000}, headers=headers)
    )
    assert page["next_after"] is None
    items: list[dict[str, Any]] = page["items"]
    return items
