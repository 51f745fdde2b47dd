"""Several ``taskstream serve`` processes on one database, as replicas behind a load balancer.

Each process has its own listener and hub, and the events table is the only thing they
share, so an append made through one replica must reach the streams of every other one, and a
client may resume on any replica with the id of the last event it got elsewhere. Under
``--workers 2`` the same holds between the two worker processes of one server, and each
worker counts its own streams against the per-subject limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chaos import api, replicas
from tests.processes import Server, start_server
from tests.sse import Frame, SseClient
from tests.test_stream_resume import assert_same_events

EXIT_SECONDS = 10
SECONDS = 30  # generous: the machine is shared


@pytest.fixture
async def streams() -> AsyncIterator[list[SseClient]]:
    """Stream connections opened by the test, reset at its end."""
    opened: list[SseClient] = []
    yield opened
    for client in opened:
        client.abort()


async def open_stream(
    opened: list[SseClient], server: Server, path: str = "/v1/stream", **options: Any
) -> SseClient:
    options.setdefault("token", server.token())
    client = await SseClient.open(server.base_url, path, seconds=SECONDS, **options)
    opened.append(client)
    assert client.status == 200, await client.read_body()
    return client


def events_only(frames: Sequence[Frame]) -> list[Frame]:
    """The frames that are events of the log (not the task stream's snapshot)."""
    return [frame for frame in frames if frame.is_event and frame.event != "snapshot"]


async def append_through_both(first: Server, second: Server, task_ids: list[str]) -> None:
    """Singles through one, a batch through the other, a new task through the first."""
    for n, task_id in enumerate(task_ids):
        await api(first).event(task_id, "progress", {"percent": 10 + n})
    items = [
        {"task_id": task_id, "type": "log", "data": {"level": "info", "message": f"m{n}"}}
        for n, task_id in enumerate(task_ids * 2)
    ]
    response = await api(second).batch(items)
    assert [r["status"] for r in response.json()["results"]] == [201] * len(items), response.text
    await api(first).create_task(id=f"late-{secrets.token_hex(4)}")


# ----------------------------------------------------------------------------- two replicas


async def test_appends_through_either_replica_reach_the_streams_of_both(
    servers: list[Server], tmp_path: Path, database_url: str, streams: list[SseClient]
) -> None:
    first, second = await replicas(servers, tmp_path, database_url)
    await api(first).create_task(id="one")
    await api(second).create_task(id="two")
    start = (await api(first).all_events())[-1]["seq"]
    on_first = await open_stream(streams, first)
    on_second = await open_stream(streams, second)
    logs_on_first = await open_stream(streams, first, params=[("type", "log")])
    task_on_second = await open_stream(streams, second, "/v1/tasks/one/stream")

    await append_through_both(first, second, ["one", "two"])
    await append_through_both(second, first, ["two", "one"])

    expected = await api(second).all_events(after=start)
    for client, wanted, who in [
        (on_first, expected, "everything, on the first"),
        (on_second, expected, "everything, on the second"),
        (logs_on_first, [e for e in expected if e["type"] == "log"], "logs, on the first"),
        (task_on_second, [e for e in expected if e["task_id"] == "one"], "task, on the second"),
    ]:
        frames = await client.events_through(wanted[-1]["seq"], seconds=SECONDS)
        assert_same_events(events_only(frames), wanted, who)


async def test_a_client_resumes_on_the_other_replica_with_exactly_the_missing_events(
    servers: list[Server], tmp_path: Path, database_url: str, streams: list[SseClient]
) -> None:
    first, second = await replicas(servers, tmp_path, database_url)
    await api(first).create_task(id="one")
    await api(first).create_task(id="two")
    everything = await open_stream(streams, first, last_event_id=0)
    task = await open_stream(streams, first, "/v1/tasks/one/stream")
    await append_through_both(first, second, ["one", "two"])
    seen = await api(first).all_events()
    received = events_only(await everything.events_through(seen[-1]["seq"], seconds=SECONDS))
    received_of_task = events_only(
        await task.events_through(
            [e for e in seen if e["task_id"] == "one"][-1]["seq"], seconds=SECONDS
        )
    )
    everything.abort()
    task.abort()

    # Away for a while: more is appended, through both replicas.
    await append_through_both(second, first, ["two", "one"])
    await append_through_both(first, second, ["one"])

    # Back, on the other replica: the header on one stream, the query parameter on the other.
    resumed = await open_stream(streams, second, last_event_id=received[-1].id)
    resumed_task = await open_stream(
        streams, second, "/v1/tasks/one/stream", last_event_id_query=received_of_task[-1].id
    )
    # ... and live events after the resume, through the replica it left.
    await append_through_both(first, second, ["two", "one"])
    everything_now = await api(second).all_events()
    of_task = [e for e in everything_now if e["task_id"] == "one"]
    received += await resumed.events_through(everything_now[-1]["seq"], seconds=SECONDS)
    received_of_task += await resumed_task.events_through(of_task[-1]["seq"], seconds=SECONDS)
    assert_same_events(received, everything_now, "resumed on the other replica")
    assert_same_events(
        received_of_task, of_task[1:], "task stream resumed on the other replica"
    )  # its first connection began with the snapshot, after the created event


# ----------------------------------------------------------------------------- --workers 2


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


def _server_side_inode(server_port: int, client_port: int) -> int | None:
    """The socket inode of the server's end of the connection from ``client_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":")[1], fields[2].split(":")[1]
        if int(local, 16) == server_port and int(remote, 16) == client_port:
            return int(fields[9])
    return None


def worker_of(server: Server, client_port: int) -> int:
    """The pid of the worker process holding the connection from ``client_port``.

    uvicorn's workers accept from one shared socket, so which one gets a connection is the
    kernel's choice; the accepted socket is then among that worker's file descriptors."""
    assert server.process is not None
    inode = _server_side_inode(server.port, client_port)
    assert inode is not None, f"no connection from port {client_port}"
    for pid in _children(server.process.pid):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
    raise AssertionError(f"no worker of {server.base_url} holds the connection from {client_port}")


def stream_worker(server: Server, client: SseClient) -> int:
    return worker_of(server, int(client.sock.getsockname()[1]))


async def append_on_a_new_connection(server: Server, task_id: str, n: int) -> int:
    """One progress event, on a connection of its own; the worker that took it."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=SECONDS) as client:
        response = await client.post(
            f"/v1/tasks/{task_id}/events",
            json={"type": "progress", "data": {"percent": n % 101}},
            headers=server.auth(),
        )
        assert response.status_code == 201, response.text
        address = response.extensions["network_stream"].get_extra_info("client_addr")
        return worker_of(server, int(address[1]))


ATTEMPTS = 60
"""Connections tried before concluding that a worker never answers: the kernel picks the
worker of each, and with two idle workers the chance of 60 the same is negligible."""


async def test_two_workers_both_serve_share_the_log_and_limit_streams_each(
    servers: list[Server], tmp_path: Path, database_url: str, streams: list[SseClient]
) -> None:
    server = await start_server(
        servers, tmp_path, database_url, secrets.token_urlsafe(32), workers=2,
        env={"TASKSTREAM_MAX_STREAMS_PER_SUBJECT": "1"},
    )  # fmt: skip
    await api(server).create_task(id="job")

    # Streams (one per subject) until each worker holds at least one.
    held: dict[int, list[SseClient]] = {}
    for n in range(ATTEMPTS):
        client = await open_stream(streams, server, token=server.token(sub=f"reader-{n}"))
        held.setdefault(stream_worker(server, client), []).append(client)
        if len(held) == 2:
            break
    assert len(held) == 2, f"every stream went to one worker: {held.keys()}"

    # Appends on connections of their own until each worker has taken some.
    took: dict[int, int] = {}
    for n in range(ATTEMPTS):
        worker = await append_on_a_new_connection(server, "job", n)
        took[worker] = took.get(worker, 0) + 1
        if len(took) == 2 and n >= 9:
            break
    assert took.keys() == held.keys(), f"streams on {held.keys()}, appends through {took}"
    expected = (await api(server).all_events())[1:]
    for worker, clients in held.items():
        for client in clients:
            frames = await client.events_through(expected[-1]["seq"], seconds=SECONDS)
            assert_same_events(frames, expected, f"a stream on worker {worker}")

    # One stream per subject *per process*: a second stream of "limited" is refused by the
    # worker that already holds one, and accepted by the other.
    answers: dict[int, list[int]] = {}
    for _ in range(ATTEMPTS):
        client = await SseClient.open(
            server.base_url, "/v1/stream", token=server.token(sub="limited"), seconds=SECONDS
        )
        streams.append(client)
        answers.setdefault(stream_worker(server, client), []).append(client.status)
        if client.status == 429:
            assert (await client.json())["code"] == "too_many_streams"
            client.abort()
        if len(answers) == 2 and any(429 in statuses for statuses in answers.values()):
            break
    assert len(answers) == 2, answers
    for worker, statuses in answers.items():
        assert statuses[0] == 200 and set(statuses[1:]) <= {429}, (worker, answers)

    # SIGTERM: the parent stops both workers, which end their streams cleanly; exit 0.
    open_streams = [c for c in streams if c.status == 200 and not c.ended]
    loop = asyncio.get_running_loop()
    signalled = loop.time()
    server.signal(signal.SIGTERM)
    for client in open_streams:
        await client.rest(seconds=EXIT_SECONDS - (loop.time() - signalled))
        assert client.clean_end and client.parser.pending == b"", (
            f"a stream did not end cleanly (reset={client.reset}, eof={client.eof})"
        )
    status = await server.wait(EXIT_SECONDS - (loop.time() - signalled))
    assert status == 0, f"exit status {status}:\n{server.output()}"
