"""Idempotent retries of appends (header and batch share one key space per task) and creates."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import Service, assert_created, assert_field_errors, assert_ok, assert_problem

# ----------------------------------------------------------------------------- appends


async def test_retry_with_same_key_returns_200_and_the_original_event(service: Service) -> None:
    api = service.api
    await api.create_task(id="i")
    first = assert_created(await api.append("i", "log", idempotency_key="k-1"))
    task = await api.task("i")
    again = await api.append("i", "log", idempotency_key="k-1")
    assert assert_ok(again) == first
    assert await api.task("i") == task
    assert len(await api.history("i")) == 2


async def test_retry_after_the_task_finished_still_returns_the_original(service: Service) -> None:
    api = service.api
    await api.create_task(id="i")
    first = assert_created(
        await api.append("i", "progress", {"percent": 50}, idempotency_key="p-50")
    )
    await api.event("i", "succeeded")
    task = await api.task("i")
    again = await api.append("i", "progress", {"percent": 50}, idempotency_key="p-50")
    assert assert_ok(again) == first
    assert await api.task("i") == task


async def test_retry_with_stale_expected_version_still_returns_the_original(
    service: Service,
) -> None:
    api = service.api
    await api.create_task(id="i")
    first = assert_created(
        await api.append("i", "started", expected_version=1, idempotency_key="s")
    )
    await api.event("i", "progress", {"percent": 1})
    again = await api.append("i", "started", expected_version=1, idempotency_key="s")
    assert assert_ok(again) == first
    assert len(await api.history("i")) == 3


async def test_different_keys_append_separately(service: Service) -> None:
    api = service.api
    await api.create_task(id="i")
    a = assert_created(await api.append("i", "log", idempotency_key="a"))
    b = assert_created(await api.append("i", "log", idempotency_key="b"))
    assert a["seq"] != b["seq"]
    assert len(await api.history("i")) == 3


async def test_keys_are_scoped_per_task(service: Service) -> None:
    api = service.api
    await api.create_task(id="x")
    await api.create_task(id="y")
    ex = assert_created(await api.append("x", "log", idempotency_key="same"))
    ey = assert_created(await api.append("y", "log", idempotency_key="same"))
    assert ex["task_id"] == "x" and ey["task_id"] == "y"


async def test_keys_are_scoped_per_tenant(service: Service) -> None:
    one, two = service.as_(tenant="t1"), service.as_(tenant="t2")
    await one.create_task(id="shared")
    await two.create_task(id="shared")
    e1 = assert_created(await one.append("shared", "log", idempotency_key="k"))
    e2 = assert_created(await two.append("shared", "log", idempotency_key="k"))
    assert (e1["tenant"], e2["tenant"]) == ("t1", "t2")


async def test_ten_concurrent_retries_store_exactly_one_event(service: Service) -> None:
    api = service.api
    await api.create_task(id="c")
    responses = await asyncio.gather(
        *(api.append("c", "progress", {"percent": 5}, idempotency_key="burst") for _ in range(10))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * 9 + [201], [r.text for r in responses]
    events = [response.json() for response in responses]
    assert all(event == events[0] for event in events)
    history = await api.history("c")
    assert [event["type"] for event in history] == ["created", "progress"]
    assert (await api.task("c"))["version"] == 2


async def test_header_key_then_batch_key_share_one_key_space(service: Service) -> None:
    api = service.api
    await api.create_task(id="s")
    first = assert_created(await api.append("s", "log", idempotency_key="shared-key"))
    results = assert_ok(
        await api.batch(
            [
                {
                    "task_id": "s",
                    "type": "log",
                    "data": first["data"],
                    "idempotency_key": "shared-key",
                }
            ]
        )
    )["results"]
    assert results[0]["status"] == 200
    assert results[0]["event"] == first
    assert len(await api.history("s")) == 2


async def test_batch_key_then_header_key_share_one_key_space(service: Service) -> None:
    api = service.api
    await api.create_task(id="s")
    data = {"level": "info", "message": "m"}
    results = assert_ok(
        await api.batch([{"task_id": "s", "type": "log", "data": data, "idempotency_key": "bk"}])
    )["results"]
    assert results[0]["status"] == 201
    again = await api.append("s", "log", data, idempotency_key="bk")
    assert assert_ok(again) == results[0]["event"]
    assert len(await api.history("s")) == 2


async def test_batch_retry_within_one_batch_returns_the_first(service: Service) -> None:
    api = service.api
    await api.create_task(id="s")
    item = {"task_id": "s", "type": "log", "data": {"level": "info", "message": "m"}}
    results = assert_ok(
        await api.batch([{**item, "idempotency_key": "dup"}, {**item, "idempotency_key": "dup"}])
    )["results"]
    assert [r["status"] for r in results] == [201, 200]
    assert results[0]["event"] == results[1]["event"]
    assert len(await api.history("s")) == 2


@pytest.mark.parametrize("key", ["!", "~" * 255, "a-b_c.d:e/f", "A" * 100, '"quoted"'])
async def test_valid_key_formats_are_accepted(service: Service, key: str) -> None:
    await service.api.create_task(id="k")
    assert_created(await service.api.append("k", "log", idempotency_key=key))
    assert_ok(await service.api.append("k", "log", idempotency_key=key))


@pytest.mark.parametrize("key", ["", "a" * 256, "a b", "tab\tkey"])
async def test_invalid_key_formats_are_422(service: Service, key: str) -> None:
    await service.api.create_task(id="k")
    before = await service.api.snapshot("k")
    response = await service.api.append("k", "log", idempotency_key=key)
    assert_problem(response, 422, "validation_error")
    assert await service.api.snapshot("k") == before


async def test_non_ascii_key_is_422(service: Service) -> None:
    await service.api.create_task(id="k")
    before = await service.api.snapshot("k")
    response = await service.api.post(
        "/v1/tasks/k/events",
        json={"type": "log", "data": {"level": "info", "message": "m"}},
        headers={"Idempotency-Key": "clé".encode()},  # type: ignore[dict-item]
    )
    assert_problem(response, 422, "validation_error")
    assert await service.api.snapshot("k") == before


@pytest.mark.parametrize("key", ["", "a" * 256, "a b", "é", 5, ["k"]])
async def test_invalid_batch_key_fails_the_item_alone(service: Service, key: object) -> None:
    api = service.api
    await api.create_task(id="k")
    results = assert_ok(
        await api.batch(
            [
                {"task_id": "k", "type": "log", "data": {"level": "info", "message": "1"}},
                {
                    "task_id": "k",
                    "type": "log",
                    "data": {"level": "info", "message": "2"},
                    "idempotency_key": key,
                },
            ]
        )
    )["results"]
    assert [r["status"] for r in results] == [201, 422]
    assert results[1]["error"]["code"] == "validation_error"
    assert len(await api.history("k")) == 2


# ----------------------------------------------------------------------------- creates


async def test_create_retry_returns_200_and_the_original_task(service: Service) -> None:
    api = service.api
    first = assert_created(
        await api.create_task_response(idempotency_key="c-1", kind="ci", title="T")
    )
    again = assert_ok(await api.create_task_response(idempotency_key="c-1", kind="ci", title="T"))
    assert again == first
    tasks = (await api.list_tasks())["items"]
    assert [task["id"] for task in tasks] == [first["id"]]
    assert len(await api.history(first["id"])) == 1


async def test_create_retry_with_explicit_id_returns_200_not_409(service: Service) -> None:
    api = service.api
    first = assert_created(await api.create_task_response(idempotency_key="c-2", id="x"))
    again = assert_ok(await api.create_task_response(idempotency_key="c-2", id="x"))
    assert again["id"] == "x"
    assert again["created_at"] == first["created_at"]


async def test_create_retry_after_progress_returns_the_same_task(service: Service) -> None:
    api = service.api
    first = assert_created(await api.create_task_response(idempotency_key="c-3"))
    await api.event(first["id"], "started")
    again = assert_ok(await api.create_task_response(idempotency_key="c-3"))
    assert again["id"] == first["id"]
    assert again["created_at"] == first["created_at"]
    assert len((await api.list_tasks())["items"]) == 1


async def test_create_key_reused_with_a_different_body_is_422(service: Service) -> None:
    api = service.api
    await api.create_task(idempotency_key="c-4", kind="ci", title="one")
    for body in ({"kind": "ci", "title": "two"}, {"kind": "other", "title": "one"}, {"kind": "ci"}):
        response = await api.create_task_response(idempotency_key="c-4", **body)
        assert_problem(response, 422, "validation_error")
    assert len((await api.list_tasks())["items"]) == 1


async def test_concurrent_create_retries_create_one_task(service: Service) -> None:
    api = service.api
    responses = await asyncio.gather(
        *(api.create_task_response(idempotency_key="burst", kind="ci") for _ in range(10))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * 9 + [201], [r.text for r in responses]
    assert len({response.json()["id"] for response in responses}) == 1
    assert len((await api.list_tasks())["items"]) == 1


async def test_create_with_a_new_key_and_a_taken_id_is_409(service: Service) -> None:
    await service.api.create_task(id="taken")
    response = await service.api.create_task_response(idempotency_key="fresh", id="taken")
    assert_problem(response, 409, "task_exists")
    assert len(await service.api.history("taken")) == 1


async def test_batch_retry_with_stale_expected_version_returns_the_original(
    service: Service,
) -> None:
    api = service.api
    await api.create_task(id="s")
    item = {"task_id": "s", "type": "started", "data": {}, "expected_version": 1,
            "idempotency_key": "once"}  # fmt: skip
    first = assert_ok(await api.batch([item]))["results"][0]
    assert first["status"] == 201
    await api.event("s", "succeeded")
    again = assert_ok(await api.batch([item]))["results"][0]
    assert again["status"] == 200
    assert again["event"] == first["event"]
    assert len(await api.history("s")) == 3


async def test_create_keys_are_scoped_per_tenant(service: Service) -> None:
    a = assert_created(await service.as_(tenant="t1").create_task_response(idempotency_key="k"))
    b = assert_created(await service.as_(tenant="t2").create_task_response(idempotency_key="k"))
    assert (a["tenant"], b["tenant"]) == ("t1", "t2")


@pytest.mark.parametrize("key", ["", "a" * 256, "a b"])
async def test_create_with_invalid_key_is_422(service: Service, key: str) -> None:
    response = await service.api.create_task_response(idempotency_key=key)
    body = assert_problem(response, 422, "validation_error")
    assert_field_errors(body)
    assert (await service.api.list_tasks())["items"] == []
