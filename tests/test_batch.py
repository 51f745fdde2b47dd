"""POST /v1/events/batch: per-item results in order, whole-batch refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import (
    Service,
    assert_event,
    assert_ok,
    assert_problem,
    assert_problem_body,
    compact,
)

SMALL_LIMITS = {"max_event_bytes": 1024, "max_body_bytes": 8192}


def log(task_id: str, message: str = "m", **extra: Any) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "type": "log",
        "data": {"level": "info", "message": message},
        **extra,
    }


def result_with_size(size: int) -> dict[str, Any]:
    """``succeeded`` data whose compact JSON encoding is exactly ``size`` bytes."""
    data = {"result": "x" * (size - len(compact({"result": ""})))}
    assert len(compact(data)) == size
    return data


@pytest.mark.parametrize("service", [SMALL_LIMITS], indirect=True)
async def test_mixed_batch_answers_each_item_in_order(service: Service) -> None:
    api = service.api
    await api.create_task(id="a")
    await api.create_task(id="b")
    items = [
        {"task_id": "a", "type": "started", "data": {}},  # 201
        {"task_id": "a", "type": "progress", "data": {"percent": 50}},  # 201
        {"task_id": "a", "type": "started", "data": {}},  # 409: a is running now
        {"task_id": "missing", "type": "log", "data": {"level": "info", "message": "m"}},  # 404
        {"task_id": "a", "type": "bogus", "data": {}},  # 422
        log("a", idempotency_key="k1"),  # 201
        log("a", idempotency_key="k1"),  # 200, same as the previous
        {"task_id": "a", "type": "log", "data": {"level": "info", "message": "m"},
         "expected_version": 2},  # 409 version_conflict
        {"task_id": "b", "type": "succeeded", "data": result_with_size(1025)},  # 413
        {"task_id": "missing", "type": "progress", "data": {"percent": 500}},  # 422 before 404
        {"task_id": "b", "type": "progress", "data": {}},  # 422
        {"task_id": "b", "type": "succeeded", "data": {"result": 1}},  # 201
        log("b"),  # 409: b finished
    ]  # fmt: skip
    results = assert_ok(await api.batch(items))["results"]
    expected = [
        (201, None),
        (201, None),
        (409, "invalid_transition"),
        (404, "task_not_found"),
        (422, "validation_error"),
        (201, None),
        (200, None),
        (409, "version_conflict"),
        (413, "payload_too_large"),
        (422, "validation_error"),
        (422, "validation_error"),
        (201, None),
        (409, "invalid_transition"),
    ]
    got = [(r["status"], (r.get("error") or {}).get("code")) for r in results]
    assert got == expected, json.dumps(results, indent=1)[:3000]
    for result in results:
        if result["status"] in (200, 201):
            assert_event(result["event"])
            assert not result.get("error")
        else:
            assert not result.get("event")
            assert_problem_body(result["error"], result["status"], None)
    assert results[5]["event"] == results[6]["event"]
    assert [r["event"]["version"] for r in results if r["status"] == 201] == [2, 3, 4, 2]
    task_a = await api.task("a")
    assert (task_a["status"], task_a["version"], task_a["percent"]) == ("running", 4, 50)
    task_b = await api.task("b")
    assert (task_b["status"], task_b["version"], task_b["result"]) == ("succeeded", 2, 1)


async def test_items_see_the_effects_of_earlier_items(service: Service) -> None:
    api = service.api
    await api.create_task(id="a")
    items = [
        {"task_id": "a", "type": "started", "data": {}, "expected_version": 1},
        {
            "task_id": "a",
            "type": "progress",
            "data": {"done": 1, "total": 4},
            "expected_version": 2,
        },
        {"task_id": "a", "type": "progress", "data": {"done": 2}, "expected_version": 3},
        {"task_id": "a", "type": "succeeded", "data": {}, "expected_version": 4},
        {"task_id": "a", "type": "cancelled", "data": {}},
    ]
    results = assert_ok(await api.batch(items))["results"]
    assert [r["status"] for r in results] == [201, 201, 201, 201, 409]
    assert [r["event"]["version"] for r in results[:4]] == [2, 3, 4, 5]
    seqs = [r["event"]["seq"] for r in results[:4]]
    assert seqs == sorted(set(seqs))
    assert (await api.history("a"))[1:] == [r["event"] for r in results[:4]]


async def test_batch_events_match_history_and_fold_into_tasks(service: Service) -> None:
    api = service.api
    await api.create_task(id="a")
    await api.create_task(id="b")
    items = [
        {"task_id": "b", "type": "progress", "data": {"percent": 10, "message": "b1"}},
        {"task_id": "a", "type": "progress", "data": {"percent": 20, "stage": "a1"}},
        {"task_id": "b", "type": "failed", "data": {"error": {"message": "x"}}},
    ]
    results = assert_ok(await api.batch(items))["results"]
    assert [r["status"] for r in results] == [201, 201, 201]
    task_a, task_b = await api.task("a"), await api.task("b")
    assert (task_a["status"], task_a["percent"], task_a["stage"]) == ("running", 20, "a1")
    assert (task_b["status"], task_b["message"], task_b["error"]) == (
        "failed",
        "b1",
        {"message": "x"},
    )
    assert task_b["last_seq"] == results[2]["event"]["seq"]


async def test_batch_of_1000_items_is_accepted(service: Service) -> None:
    api = service.api
    await api.create_task(id="big")
    items = [log("big", str(index)) for index in range(1000)]
    results = assert_ok(await api.batch(items))["results"]
    assert len(results) == 1000
    assert all(r["status"] == 201 for r in results)
    assert [r["event"]["version"] for r in results] == list(range(2, 1002))
    assert (await api.task("big"))["version"] == 1001


async def test_batch_of_1001_items_is_refused_whole(service: Service) -> None:
    api = service.api
    await api.create_task(id="big")
    before = await api.snapshot("big")
    response = await api.batch([log("big", str(index)) for index in range(1001)])
    assert_problem(response, 422, "validation_error")
    assert await api.snapshot("big") == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"events": "x"},
        {"events": None},
        {"events": {"task_id": "a"}},
        {"items": []},
        [],
        [{"task_id": "a", "type": "log", "data": {}}],
        "events",
    ],
)
async def test_malformed_envelope_is_refused_whole(service: Service, body: Any) -> None:
    api = service.api
    await api.create_task(id="a")
    before = await api.snapshot("a")
    response = await api.post("/v1/events/batch", json=body)
    assert_problem(response, 422, "validation_error")
    assert await api.snapshot("a") == before


async def test_batch_with_malformed_json_is_400(service: Service) -> None:
    response = await service.api.post_raw("/v1/events/batch", '{"events": [')
    assert_problem(response, 400, "validation_error")


@pytest.mark.parametrize("service", [SMALL_LIMITS], indirect=True)
async def test_batch_body_over_the_limit_is_refused_whole(service: Service) -> None:
    api = service.api
    await api.create_task(id="a")
    before = await api.snapshot("a")
    items = [log("a", "x" * 500) for _ in range(20)]
    assert len(json.dumps({"events": items})) > 8192
    assert_problem(await api.batch(items), 413, "payload_too_large")
    assert await api.snapshot("a") == before


@pytest.mark.parametrize("service", [SMALL_LIMITS], indirect=True)
async def test_item_data_size_limit_is_inclusive_and_counts_compact_json(service: Service) -> None:
    api = service.api
    for task_id in ("at", "over", "spaced"):
        await api.create_task(id=task_id)
    at_limit = result_with_size(1024)
    over_limit = result_with_size(1025)
    body = {
        "events": [
            {"task_id": "at", "type": "succeeded", "data": at_limit},
            {"task_id": "over", "type": "succeeded", "data": over_limit},
            {"task_id": "spaced", "type": "succeeded", "data": at_limit},
        ]
    }
    # Generous whitespace: the raw item is far over 1024 bytes, its compact encoding is not.
    raw = json.dumps(body, indent=40)
    results = assert_ok(await api.post_raw("/v1/events/batch", raw))["results"]
    assert [r["status"] for r in results] == [201, 413, 201]
    assert_problem_body(results[1]["error"], 413, "payload_too_large")
    assert (await api.task("over"))["status"] == "pending"
    assert (await api.task("spaced"))["result"] == at_limit["result"]


async def test_batch_item_for_another_tenants_task_is_404(service: Service) -> None:
    await service.as_(tenant="t2").create_task(id="theirs")
    results = assert_ok(await service.api.batch([log("theirs")]))["results"]
    assert results[0]["status"] == 404
    assert results[0]["error"]["code"] == "task_not_found"
    assert len(await service.as_(tenant="t2").history("theirs")) == 1


@pytest.mark.parametrize(
    "item",
    [
        {"task_id": "a", "type": "log"},
        {"task_id": "a", "data": {"level": "info", "message": "m"}},
        {"type": "log", "data": {"level": "info", "message": "m"}},
        {"task_id": "a b", "type": "log", "data": {"level": "info", "message": "m"}},
        {"task_id": 5, "type": "log", "data": {"level": "info", "message": "m"}},
        {"task_id": "a", "type": "log", "data": [1]},
        {"task_id": "a", "type": "log", "data": {"level": "info", "message": "m"},
         "expected_version": "1"},
        {"task_id": "a", "type": "log", "data": {"level": "info", "message": "m"},
         "expected_version": -1},
        {"task_id": "a", "type": 7, "data": {}},
    ],
)  # fmt: skip
async def test_invalid_item_fails_alone(service: Service, item: dict[str, Any]) -> None:
    api = service.api
    await api.create_task(id="a")
    results = assert_ok(await api.batch([item, log("a")]))["results"]
    assert [r["status"] for r in results] == [422, 201]
    assert_problem_body(results[0]["error"], 422, "validation_error")
    assert (await api.task("a"))["version"] == 2


async def test_empty_batch_answers_no_results(service: Service) -> None:
    response = await service.api.batch([])
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert response.json() == {"results": []}
    else:
        assert_problem(response, 422, "validation_error")


async def test_unstorable_item_fails_alone(service: Service) -> None:
    api = service.api
    await api.create_task(id="a")
    deep: Any = "leaf"
    for _ in range(70):
        deep = [deep]
    items = [
        log("a", "\u0000"),
        log("a", "kept"),
        {"task_id": "a", "type": "succeeded", "data": {"result": deep}},
    ]
    results = assert_ok(await api.batch(items))["results"]
    assert [r["status"] for r in results] == [422, 201, 422]
    for result in (results[0], results[2]):
        assert_problem_body(result["error"], 422, "validation_error")
    assert [e["data"].get("message") for e in await api.history("a")] == [None, "kept"]


@pytest.mark.parametrize("service", [SMALL_LIMITS], indirect=True)
async def test_oversized_data_is_413_even_when_the_item_breaks_other_rules(
    service: Service,
) -> None:
    """The contract checks 413 before 422: found by the property tests (an item with a bad
    task id and oversized data was answered 422)."""
    api = service.api
    await api.create_task(id="t")
    big = result_with_size(1025)
    items = [
        {"task_id": "-bad", "type": "succeeded", "data": big},
        {"task_id": "t", "type": "no-such-type", "data": big},
        {"task_id": "t", "type": "succeeded", "data": big, "extra": 1},
    ]
    results = assert_ok(await api.batch(items))["results"]
    assert [r["status"] for r in results] == [413, 413, 413]
    single = await api.post("/v1/tasks/t/events", json={"type": "no-such-type", "data": big})
    assert_problem(single, 413, "payload_too_large")
    assert (await api.task("t"))["version"] == 1
