"""The request log: one structured line per request and per stream, with a request id and no
secret (the streams' ``?access_token=`` is redacted; the Authorization header never logged)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from service.logs import JsonFormatter
from tests.helpers import Service
from tests.sse import SseClient, wait_ready

REQUEST_LOGGER = "taskstream.request"


def request_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The request log's records as the JSON lines a deployment would see."""
    formatter = JsonFormatter()
    return [
        json.loads(formatter.format(record))
        for record in caplog.records
        if record.name == REQUEST_LOGGER
    ]


async def test_each_request_is_one_json_line_with_its_id(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=REQUEST_LOGGER):
        created = await service.client.post(
            "/v1/tasks",
            json={"id": "job", "kind": "k"},
            headers={**service.auth(sub="worker-7", tenant="acme"), "X-Request-ID": "abc-123"},
        )
        missing = await service.client.get("/v1/tasks/nope", headers=service.auth())
    assert created.status_code == 201 and created.headers["x-request-id"] == "abc-123"
    generated = missing.headers["x-request-id"]
    assert generated and generated != "abc-123"
    first, second = request_lines(caplog)
    assert first["request_id"] == "abc-123"
    assert (first["method"], first["path"], first["status"]) == ("POST", "/v1/tasks", 201)
    assert (first["sub"], first["tenant"]) == ("worker-7", "acme")
    assert first["duration_ms"] >= 0
    assert first["level"] == "info" and first["logger"] == REQUEST_LOGGER
    assert first["time"].endswith("Z")
    assert (second["request_id"], second["status"]) == (generated, 404)


async def test_an_unusable_request_id_is_replaced(service: Service) -> None:
    response = await service.client.get("/healthz", headers={"X-Request-ID": "bad id\t!"})
    assert response.headers["x-request-id"] != "bad id\t!"


async def test_tokens_never_reach_the_log(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    token = service.token()
    with caplog.at_level(logging.INFO, logger=REQUEST_LOGGER):
        # A token in the query of a non-stream route is ignored (401) but still logged.
        response = await service.client.get(f"/v1/tasks?kind=a&access_token={token}&limit=5")
        assert response.status_code == 401
        await service.client.get("/v1/tasks", headers={"Authorization": f"Bearer {token}"})
    lines = request_lines(caplog)
    assert lines[0]["path"] == "/v1/tasks?kind=a&access_token=[redacted]&limit=5"
    assert lines[0]["status"] == 401
    assert not any(token in json.dumps(line) for line in lines), lines


async def test_a_stream_logs_when_it_ends_with_its_frames(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    await wait_ready(service.client)
    await service.api.create_task(id="job")
    with caplog.at_level(logging.INFO, logger=REQUEST_LOGGER):
        async with await SseClient.open(
            service.base_url,
            "/v1/tasks/job/stream",
            token=service.token(),
            token_in_query=True,
            last_event_id=0,
        ) as client:
            assert (await client.next_event()) is not None  # created, from the table
            await service.api.event("job", "started")
            done = await service.api.event("job", "succeeded")
            await client.events_through(done["seq"])
            await client.rest()
    [stream] = [line for line in request_lines(caplog) if "/stream" in line["path"]]
    assert stream["path"] == "/v1/tasks/job/stream?access_token=[redacted]"
    assert (stream["status"], stream["end"]) == (200, "terminal")
    assert stream["backfilled"] == 1
    assert stream["frames"] == 2


async def test_a_stream_whose_client_vanished_is_logged_too(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    await wait_ready(service.client)
    with caplog.at_level(logging.INFO, logger=REQUEST_LOGGER):
        client = await SseClient.open(service.base_url, "/v1/stream", token=service.token())
        assert client.status == 200
        client.abort()
        async with asyncio.timeout(5):
            while True:  # the log line comes once the server has noticed
                streams = [line for line in request_lines(caplog) if line["path"] == "/v1/stream"]
                if streams:
                    break
                await asyncio.sleep(0.01)
    [stream] = streams
    assert (stream["status"], stream["end"], stream["frames"]) == (200, "lost", 0)
