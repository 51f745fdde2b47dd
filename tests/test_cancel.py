"""Cancellation through the stream (contract v1.1): a frontend asks, the worker learns of it from
its own append answers, and the worker appends ``cancelled``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.helpers import (
    STATUSES,
    TERMINAL,
    Service,
    assert_created,
    assert_event,
    assert_ok,
    assert_problem,
    settled,
)
from tests.sse import SseClient, wait_ready

CANCEL_ONLY = "tasks:cancel"


async def cancel(service: Service, task_id: str, body: Any = None, **token: Any) -> Any:
    headers = service.auth(**token) if token else service.auth()
    if body is None:
        return await service.client.post(f"/v1/tasks/{task_id}/cancel", headers=headers)
    return await service.client.post(f"/v1/tasks/{task_id}/cancel", json=body, headers=headers)


@pytest.mark.parametrize("status", ["pending", "running"])
async def test_a_cancel_request_is_an_event_that_leaves_the_status_alone(
    service: Service, status: str
) -> None:
    await service.api.create_task(id="job")
    await service.api.bring_to("job", status)
    response = await cancel(service, "job", {"reason": "user clicked cancel"})
    event = assert_created(response)
    assert_event(event)
    assert event["type"] == "cancel_requested"
    assert event["data"] == {"reason": "user clicked cancel"}
    assert response.headers["location"]
    task = await service.api.task("job")
    assert task["status"] == status
    assert task["cancel_requested"] is True
    assert task["last_seq"] == event["seq"]


async def test_without_a_body_the_request_has_no_reason(service: Service) -> None:
    await service.api.create_task(id="job")
    event = assert_created(await cancel(service, "job"))
    assert event["data"] == {}


async def test_a_task_not_asked_to_cancel_says_so(service: Service) -> None:
    task = await service.api.create_task(id="job")
    assert task["cancel_requested"] is False
    assert (await service.api.task("job"))["cancel_requested"] is False


async def test_a_repeated_request_answers_200_with_the_first_and_appends_nothing(
    service: Service,
) -> None:
    await service.api.create_task(id="job")
    first = assert_created(await cancel(service, "job", {"reason": "a"}))
    again = await cancel(service, "job", {"reason": "b"})
    assert again.status_code == 200
    assert again.json() == first
    through_events = await service.api.append("job", "cancel_requested", {})
    assert through_events.status_code == 200
    assert through_events.json() == first
    assert [e["type"] for e in await service.api.history("job")] == ["created", "cancel_requested"]


async def test_ten_concurrent_requests_append_one_event(service: Service) -> None:
    await service.api.create_task(id="job")
    await service.api.bring_to("job", "running")
    answers = await asyncio.gather(*(cancel(service, "job") for _ in range(10)))
    assert sorted(a.status_code for a in answers) == [200] * 9 + [201]
    assert len({a.json()["seq"] for a in answers}) == 1
    types = [e["type"] for e in await service.api.history("job")]
    assert types.count("cancel_requested") == 1


@pytest.mark.parametrize("status", TERMINAL)
async def test_a_finished_task_cannot_be_asked_to_cancel(service: Service, status: str) -> None:
    await service.api.create_task(id="job")
    await service.api.bring_to("job", status)
    before = await service.api.snapshot("job")
    assert_problem(await cancel(service, "job"), 409, "invalid_transition")
    assert await service.api.snapshot("job") == before


async def test_after_the_task_finishes_a_repeat_is_refused_too(service: Service) -> None:
    await service.api.create_task(id="job")
    assert_created(await cancel(service, "job"))
    await service.api.event("job", "cancelled", {"reason": "as asked"})
    assert_problem(await cancel(service, "job"), 409, "invalid_transition")
    assert (await service.api.task("job"))["cancel_requested"] is True


async def test_a_frontend_token_with_only_tasks_cancel_may_cancel_but_not_append(
    service: Service,
) -> None:
    await service.api.create_task(id="job")
    assert_created(await cancel(service, "job", scopes=CANCEL_ONLY))
    refused = await service.client.post(
        "/v1/tasks/job/events",
        json={"type": "progress", "data": {"percent": 1}},
        headers=service.auth(scopes=CANCEL_ONLY),
    )
    assert_problem(refused, 403, "forbidden")


@pytest.mark.parametrize("scopes", ["tasks:read", "events:read", ""])
async def test_other_scopes_may_not_cancel(service: Service, scopes: str) -> None:
    await service.api.create_task(id="job")
    assert_problem(await cancel(service, "job", scopes=scopes), 403, "forbidden")
    assert (await service.api.task("job"))["cancel_requested"] is False


async def test_without_a_token_401(service: Service) -> None:
    await service.api.create_task(id="job")
    assert_problem(await service.client.post("/v1/tasks/job/cancel"), 401, "unauthorized")


@pytest.mark.parametrize("task_id", ["nope", "bad id!"])
async def test_an_unknown_task_is_404(service: Service, task_id: str) -> None:
    assert_problem(await cancel(service, task_id), 404, "task_not_found")


async def test_another_tenants_task_is_404_and_untouched(service: Service) -> None:
    await service.api.create_task(id="job")
    assert_problem(await cancel(service, "job", tenant="t2"), 404, "task_not_found")
    assert (await service.api.task("job"))["cancel_requested"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [({"reason": 5}, "reason"), ({"reason": "x", "why": 1}, "why"), ([], "body")],
)
async def test_an_invalid_body_is_422_and_changes_nothing(
    service: Service, body: Any, field: str
) -> None:
    await service.api.create_task(id="job")
    before = await service.api.snapshot("job")
    response = await cancel(service, "job", body)
    assert_problem(response, 422, "validation_error")
    assert field in response.text
    assert await service.api.snapshot("job") == before


async def test_malformed_json_is_400_and_other_media_types_415(service: Service) -> None:
    await service.api.create_task(id="job")
    malformed = await service.api.post_raw("/v1/tasks/job/cancel", b"{")
    assert_problem(malformed, 400, "validation_error")
    text = await service.api.post_raw("/v1/tasks/job/cancel", b"stop", content_type="text/plain")
    assert_problem(text, 415, "unsupported_media_type")
    assert (await service.api.task("job"))["cancel_requested"] is False


# ------------------------------------------------------------------ how the worker learns of it


async def test_append_answers_carry_cancel_requested_while_the_request_is_pending(
    service: Service,
) -> None:
    await service.api.create_task(id="job")
    started = await service.api.append("job", "started")
    assert "cancel-requested" not in started.headers
    assert_created(await cancel(service, "job", scopes=CANCEL_ONLY))
    progress = await service.api.append("job", "progress", {"percent": 40})
    assert progress.status_code == 201
    assert progress.headers["cancel-requested"] == "true"
    log = await service.api.append("job", "log", idempotency_key="log-1")
    assert log.headers["cancel-requested"] == "true"
    replay = await service.api.append("job", "log", idempotency_key="log-1")
    assert replay.status_code == 200
    assert replay.headers["cancel-requested"] == "true"
    cancelled = await service.api.append("job", "cancelled", {"reason": "as asked"})
    assert cancelled.status_code == 201
    assert "cancel-requested" not in cancelled.headers  # no longer pending: it was acted on
    task = await service.api.task("job")
    assert task["status"] == "cancelled"
    assert task["cancel_requested"] is True


async def test_batch_results_carry_cancel_requested_for_that_task_only(service: Service) -> None:
    await service.api.create_task(id="asked")
    await service.api.create_task(id="other")
    assert_created(await cancel(service, "asked"))
    response = await service.api.batch(
        [
            {"task_id": "asked", "type": "progress", "data": {"percent": 10}},
            {"task_id": "other", "type": "progress", "data": {"percent": 10}},
            {"task_id": "asked", "type": "progress", "data": {"percent": 500}},
        ]
    )
    results = assert_ok(response)["results"]
    assert [r["status"] for r in results] == [201, 201, 422]
    assert results[0]["cancel_requested"] is True
    assert "cancel_requested" not in results[1]
    assert "cancel_requested" not in results[2]


async def test_a_cancel_in_the_same_batch_as_the_workers_progress(service: Service) -> None:
    await service.api.create_task(id="job")
    response = await service.api.batch(
        [
            {"task_id": "job", "type": "cancel_requested", "data": {"reason": "r"}},
            {"task_id": "job", "type": "cancel_requested", "data": {}},
            {"task_id": "job", "type": "progress", "data": {"percent": 10}},
        ]
    )
    results = assert_ok(response)["results"]
    assert [r["status"] for r in results] == [201, 200, 201]
    assert results[1]["event"] == results[0]["event"]
    assert all(r["cancel_requested"] is True for r in results)


async def test_the_request_reaches_subscribers_of_the_task_stream(service: Service) -> None:
    await service.api.create_task(id="job")
    await service.api.bring_to("job", "running")
    await wait_ready(service.client)
    path = "/v1/tasks/job/stream"
    async with await SseClient.open(service.base_url, path, token=service.token()) as stream:
        snapshot = await stream.next_event()
        assert snapshot is not None and snapshot.event == "snapshot"
        assert snapshot.json()["cancel_requested"] is False
        event = assert_created(await cancel(service, "job", {"reason": "stop"}))
        frame = await stream.next_event()
        assert frame is not None and frame.event == "cancel_requested"
        assert frame.id == str(event["seq"])
        assert frame.json() == event


async def test_the_task_listing_shows_the_request(service: Service) -> None:
    await service.api.create_task(id="job")
    assert_created(await cancel(service, "job"))
    [listed] = (await service.api.list_tasks())["items"]
    assert settled(listed) == settled(await service.api.task("job"))
    assert listed["cancel_requested"] is True
    assert listed["status"] in STATUSES
