"""Appending events: the transition table, data rules, versions, and folding into the task."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.helpers import (
    CLOCK_FIELDS,
    EVENT_TYPES,
    STATUSES,
    TRANSITIONS,
    Service,
    assert_created,
    assert_event,
    assert_field_errors,
    assert_problem,
    semantic,
    settled,
    without,
)

# ----------------------------------------------------------------------------- the table


async def test_transition_table_every_type_from_every_status(service: Service) -> None:
    api = service.api
    mismatches: list[str] = []
    for status in STATUSES:
        for type in EVENT_TYPES:
            task_id = f"{status}-{type}"
            await api.create_task(id=task_id)
            await api.bring_to(task_id, status)
            before = settled(await api.task(task_id))
            assert before["status"] == status
            response = await api.append(task_id, type)
            after = settled(await api.task(task_id))
            expected_status = TRANSITIONS[type].get(status)
            if expected_status is None:
                if response.status_code != 409 or response.json().get("code") != (
                    "invalid_transition"
                ):
                    mismatches.append(
                        f"{type} from {status}: expected 409 invalid_transition, "
                        f"got {response.status_code} {response.text[:200]}"
                    )
                if after != before:
                    mismatches.append(f"{type} from {status}: refused but task changed")
                continue
            if response.status_code != 201:
                mismatches.append(
                    f"{type} from {status}: expected 201, got {response.status_code} "
                    f"{response.text[:200]}"
                )
                continue
            event = response.json()
            assert_event(event)
            if (event["type"], event["version"], event["task_id"]) != (
                type,
                before["version"] + 1,
                task_id,
            ):
                mismatches.append(f"{type} from {status}: wrong event {event}")
            if after["status"] != expected_status:
                mismatches.append(
                    f"{type} from {status}: status after is {after['status']}, "
                    f"expected {expected_status}"
                )
            if after["version"] != event["version"] or after["last_seq"] != event["seq"]:
                mismatches.append(f"{type} from {status}: task not at the event: {after}")
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize("status", STATUSES)
async def test_created_cannot_be_appended(service: Service, status: str) -> None:
    await service.api.create_task(id="t")
    await service.api.bring_to("t", status)
    before, count = await service.api.snapshot("t")
    response = await service.api.append("t", "created", {"kind": "x"})
    assert response.status_code in (409, 422), response.text
    assert_problem(response, response.status_code)
    assert await service.api.snapshot("t") == (before, count)


# ----------------------------------------------------------------------------- the event


async def test_append_returns_the_event_with_location(service: Service) -> None:
    task = await service.api.create_task(id="a1")
    response = await service.api.append("a1", "log", {"level": "info", "message": "hi"})
    event = assert_created(response)
    assert_event(event)
    assert event["task_id"] == "a1"
    assert event["tenant"] == "t1"
    assert event["type"] == "log"
    assert event["version"] == 2
    assert event["seq"] > task["last_seq"]
    assert event["data"] == {"level": "info", "message": "hi"}
    assert (await service.api.history("a1"))[-1] == event


async def test_versions_count_up_without_holes_and_seq_increases(service: Service) -> None:
    await service.api.create_task(id="v")
    for index in range(5):
        await service.api.event("v", "progress", {"percent": index * 10})
    await service.api.event("v", "succeeded")
    events = await service.api.history("v")
    assert [event["version"] for event in events] == list(range(1, 8))
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(set(seqs))
    times = [event["time"] for event in events]
    assert times == sorted(times)
    task = await service.api.task("v")
    assert task["version"] == 7
    assert task["last_seq"] == seqs[-1]
    assert task["updated_at"] == times[-1]


async def test_data_round_trips_semantically(service: Service) -> None:
    await service.api.create_task(id="rt")
    result = {
        "text": 'üñíçødé 😀 "quotes" \\ back\nnew line',
        "numbers": [0, -1, 2**62, 1.5, -2.25e-7, 1e300],
        "flags": [True, False, None],
        "nested": {"a": {"b": {"c": []}}, "": "empty key"},
    }
    event = await service.api.event("rt", "succeeded", {"result": result})
    assert semantic(event["data"]) == semantic({"result": result})
    assert semantic((await service.api.history("rt"))[-1]["data"]) == semantic({"result": result})
    assert semantic((await service.api.task("rt"))["result"]) == semantic(result)


# ----------------------------------------------------------------------------- expected_version


async def test_expected_version_matching_appends(service: Service) -> None:
    await service.api.create_task(id="ev")
    event = await service.api.event("ev", "started", expected_version=1)
    assert event["version"] == 2
    event = await service.api.event("ev", "progress", {"percent": 1}, expected_version=2)
    assert event["version"] == 3


@pytest.mark.parametrize("expected", [0, 2, 5])
async def test_expected_version_mismatch_is_409_version_conflict(
    service: Service, expected: int
) -> None:
    await service.api.create_task(id="vc")
    before = await service.api.snapshot("vc")
    response = await service.api.append("vc", "started", expected_version=expected)
    assert_problem(response, 409, "version_conflict")
    assert await service.api.snapshot("vc") == before


# ----------------------------------------------------------------------------- data rules


@pytest.mark.parametrize(
    ("type", "data", "field"),
    [
        ("bogus", {}, "type"),
        ("", {}, "type"),
        ("STARTED", {}, "type"),
        ("progress", {}, ""),
        ("progress", {"message": "only a message"}, ""),
        ("progress", {"percent": 101}, "percent"),
        ("progress", {"percent": -0.5}, "percent"),
        ("progress", {"percent": "50"}, "percent"),
        ("progress", {"done": -1}, "done"),
        ("progress", {"done": 1.5}, "done"),
        ("progress", {"done": "3"}, "done"),
        ("progress", {"done": 1, "total": 0}, "total"),
        ("progress", {"done": 1, "total": -4}, "total"),
        ("progress", {"done": 1, "total": 2.5}, "total"),
        ("progress", {"percent": 5, "message": 7}, "message"),
        ("progress", {"percent": 5, "stage": ["x"]}, "stage"),
        ("log", {"message": "no level"}, "level"),
        ("log", {"level": "info"}, "message"),
        ("log", {"level": "trace", "message": "m"}, "level"),
        ("log", {"level": "INFO", "message": "m"}, "level"),
        ("log", {"level": "info", "message": 5}, "message"),
        ("failed", {}, "error"),
        ("failed", {"error": {}}, "message"),
        ("failed", {"error": "boom"}, "error"),
        ("failed", {"error": {"message": 5}}, "message"),
        ("started", {"worker": 5}, "worker"),
        ("cancelled", {"reason": 5}, "reason"),
    ],
)
async def test_invalid_data_is_422_naming_the_field(
    service: Service, type: str, data: dict[str, Any], field: str
) -> None:
    await service.api.create_task(id="d")
    before = await service.api.snapshot("d")
    response = await service.api.append("d", type, data)
    body = assert_problem(response, 422, "validation_error")
    if field:
        assert_field_errors(body, field)
    assert await service.api.snapshot("d") == before


@pytest.mark.parametrize("data", [[], "text", 5, None])
async def test_data_that_is_not_an_object_is_422(service: Service, data: Any) -> None:
    await service.api.create_task(id="d")
    before = await service.api.snapshot("d")
    response = await service.api.post("/v1/tasks/d/events", json={"type": "log", "data": data})
    assert_problem(response, 422, "validation_error")
    assert await service.api.snapshot("d") == before


@pytest.mark.parametrize(
    ("type", "data"),
    [
        ("started", {}),
        ("progress", {"percent": 0}),
        ("progress", {"percent": 100}),
        ("progress", {"percent": 33.5}),
        ("progress", {"done": 0}),
        ("log", {"level": "debug", "message": ""}),
        ("log", {"level": "warning", "message": "w"}),
        ("log", {"level": "error", "message": "e"}),
        ("succeeded", {}),
        ("succeeded", {"result": None}),
        ("succeeded", {"result": [1, 2]}),
        ("succeeded", {"result": "text"}),
        ("failed", {"error": {"message": "m", "code": "E42"}}),
        ("cancelled", {}),
    ],
)
async def test_valid_data_variants_are_accepted(
    service: Service, type: str, data: dict[str, Any]
) -> None:
    await service.api.create_task(id="ok")
    event = await service.api.event("ok", type, data)
    assert event["data"] == data


async def test_append_to_unknown_task_is_404(service: Service) -> None:
    assert_problem(await service.api.append("ghost", "started"), 404, "task_not_found")
    assert await service.api.all_events() == []


# ----------------------------------------------------------------------------- folding


async def test_progress_fields_keep_their_latest_value(service: Service) -> None:
    api = service.api
    await api.create_task(id="f")
    await api.event("f", "progress", {"percent": 20, "message": "a", "stage": "s1"})
    await api.event("f", "progress", {"percent": 30})
    task = await api.task("f")
    assert (task["percent"], task["message"], task["stage"]) == (30, "a", "s1")
    await api.event("f", "progress", {"percent": 35, "stage": "s2"})
    task = await api.task("f")
    assert (task["percent"], task["message"], task["stage"]) == (35, "a", "s2")
    assert task["done"] is None and task["total"] is None


async def test_progress_derives_percent_from_done_and_latest_total(service: Service) -> None:
    api = service.api
    await api.create_task(id="f")
    await api.event("f", "progress", {"done": 1, "total": 4})
    task = await api.task("f")
    assert (task["done"], task["total"]) == (1, 4)
    assert task["percent"] == pytest.approx(25)
    await api.event("f", "progress", {"done": 2})
    task = await api.task("f")
    assert (task["done"], task["total"]) == (2, 4)
    assert task["percent"] == pytest.approx(50)
    await api.event("f", "progress", {"done": 1, "total": 3})
    task = await api.task("f")
    assert task["percent"] == pytest.approx(100 / 3)


async def test_progress_explicit_percent_wins_over_done_and_total(service: Service) -> None:
    await service.api.create_task(id="f")
    await service.api.event("f", "progress", {"percent": 40, "done": 1, "total": 10})
    task = await service.api.task("f")
    assert (task["percent"], task["done"], task["total"]) == (40, 1, 10)


async def test_progress_types_are_number_and_integers(service: Service) -> None:
    await service.api.create_task(id="f")
    await service.api.event("f", "progress", {"done": 7, "total": 8, "percent": 12.5})
    task = await service.api.task("f")
    assert isinstance(task["done"], int) and isinstance(task["total"], int)
    assert isinstance(task["percent"], int | float)
    assert task["percent"] == 12.5


async def test_log_changes_no_field(service: Service) -> None:
    api = service.api
    await api.create_task(id="f", title="t", metadata={"m": 1})
    await api.event("f", "progress", {"percent": 10, "done": 1, "total": 10, "message": "x"})
    before = await api.task("f")
    event = await api.event("f", "log", {"level": "warning", "message": "careful"})
    after = await api.task("f")
    changing = ("version", "last_seq", "updated_at", *CLOCK_FIELDS)
    assert without(after, *changing) == without(before, *changing)
    assert after["version"] == event["version"]
    assert after["last_seq"] == event["seq"]


async def test_log_while_pending_keeps_it_pending_without_started_at(service: Service) -> None:
    await service.api.create_task(id="f")
    await service.api.event("f", "log")
    task = await service.api.task("f")
    assert task["status"] == "pending"
    assert task["started_at"] is None


async def test_started_at_is_set_when_first_running_and_kept(service: Service) -> None:
    api = service.api
    await api.create_task(id="f")
    started = await api.event("f", "started")
    assert (await api.task("f"))["started_at"] == started["time"]
    await api.event("f", "progress", {"percent": 50})
    task = await api.task("f")
    assert task["started_at"] == started["time"]
    assert task["finished_at"] is None


async def test_progress_from_pending_starts_the_task(service: Service) -> None:
    await service.api.create_task(id="f")
    event = await service.api.event("f", "progress", {"percent": 5})
    task = await service.api.task("f")
    assert task["status"] == "running"
    assert task["started_at"] == event["time"]


async def test_succeeded_sets_percent_100_result_and_finished_at(service: Service) -> None:
    api = service.api
    await api.create_task(id="f")
    await api.event("f", "progress", {"percent": 40, "message": "m"})
    event = await api.event("f", "succeeded", {"result": {"artifact": "a.tgz", "size": 12}})
    task = await api.task("f")
    assert task["status"] == "succeeded"
    assert task["percent"] == 100
    assert task["result"] == {"artifact": "a.tgz", "size": 12}
    assert task["error"] is None
    assert task["finished_at"] == event["time"]
    assert task["message"] == "m"


async def test_succeeded_without_result_leaves_result_null(service: Service) -> None:
    await service.api.create_task(id="f")
    await service.api.event("f", "succeeded", {})
    task = await service.api.task("f")
    assert task["result"] is None
    assert task["percent"] == 100


async def test_succeeded_from_pending_never_sets_started_at(service: Service) -> None:
    await service.api.create_task(id="f")
    event = await service.api.event("f", "succeeded")
    task = await service.api.task("f")
    assert task["started_at"] is None
    assert task["finished_at"] == event["time"]


async def test_failed_sets_error_and_finished_at(service: Service) -> None:
    api = service.api
    await api.create_task(id="f")
    await api.event("f", "progress", {"percent": 40})
    error = {"message": "disk full", "code": "ENOSPC"}
    event = await api.event("f", "failed", {"error": error})
    task = await api.task("f")
    assert task["status"] == "failed"
    assert task["error"] == error
    assert task["result"] is None
    assert task["percent"] == 40
    assert task["finished_at"] == event["time"]


@pytest.mark.parametrize(
    "error",
    [
        {"message": "m"},
        {"message": "m", "code": None},
        {"message": "m", "code": "E1", "retryable": False, "detail": None},
    ],
)
async def test_the_task_error_is_the_terminal_events_error_as_given(
    service: Service, error: dict[str, object]
) -> None:
    """Explicit nulls and extra members survive (the fold once dropped null members)."""
    api = service.api
    await api.create_task(id="f")
    event = await api.event("f", "failed", {"error": error})
    assert event["data"]["error"] == error
    assert (await api.task("f"))["error"] == error


async def test_cancelled_sets_finished_at(service: Service) -> None:
    api = service.api
    await api.create_task(id="f")
    await api.event("f", "started")
    event = await api.event("f", "cancelled", {"reason": "user"})
    task = await api.task("f")
    assert task["status"] == "cancelled"
    assert task["finished_at"] == event["time"]
    assert task["result"] is None and task["error"] is None


async def test_times_are_microsecond_utc_everywhere(service: Service) -> None:
    api = service.api
    task = await api.create_task(id="f")
    await api.event("f", "started")
    await api.event("f", "succeeded")
    task = await api.task("f")
    for name in ("created_at", "updated_at", "started_at", "finished_at"):
        assert task[name] is not None
    # assert_task / assert_event check the exact format
    for event in await api.history("f"):
        assert_event(event)
    for event in await api.all_events():
        assert_event(event)


# ----------------------------------------------------------------------------- concurrency


async def test_concurrent_appends_to_one_task_get_contiguous_versions(service: Service) -> None:
    api = service.api
    await api.create_task(id="c")
    responses = await asyncio.gather(
        *(api.append("c", "log", {"level": "info", "message": str(i)}) for i in range(30))
    )
    assert [r.status_code for r in responses] == [201] * 30, [r.text for r in responses]
    assert sorted(r.json()["version"] for r in responses) == list(range(2, 32))
    history = await api.history("c")
    assert [e["version"] for e in history] == list(range(1, 32))
    assert [e["seq"] for e in history] == sorted({e["seq"] for e in history})
    task = await api.task("c")
    assert (task["version"], task["last_seq"]) == (31, history[-1]["seq"])


async def test_concurrent_appends_with_one_expected_version_let_exactly_one_through(
    service: Service,
) -> None:
    api = service.api
    await api.create_task(id="c")
    responses = await asyncio.gather(
        *(api.append("c", "progress", {"percent": i}, expected_version=1) for i in range(10))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 9, [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "version_conflict")
    assert (await api.task("c"))["version"] == 2


async def test_concurrent_terminal_events_let_exactly_one_through(service: Service) -> None:
    api = service.api
    await api.create_task(id="c")
    await api.event("c", "started")
    types = ["succeeded", "failed", "cancelled"] * 4
    responses = await asyncio.gather(*(api.append("c", type) for type in types))
    winners = [(t, r.json()) for t, r in zip(types, responses, strict=True) if r.status_code == 201]
    assert len(winners) == 1, [r.text for r in responses]
    for response in responses:
        if response.status_code != 201:
            assert_problem(response, 409, "invalid_transition")
    ((winner_type, winner),) = winners
    task = await api.task("c")
    assert task["status"] == winner_type
    assert (task["version"], task["last_seq"]) == (3, winner["seq"])
    assert len(await api.history("c")) == 3


async def test_concurrent_creates_of_one_id_let_exactly_one_through(service: Service) -> None:
    responses = await asyncio.gather(
        *(service.api.create_task_response(id="same", title=str(i)) for i in range(10))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 9, [r.text for r in responses]
    assert len(await service.api.history("same")) == 1


async def test_batches_and_single_appends_interleave_without_holes(service: Service) -> None:
    api = service.api
    await api.create_task(id="c")
    batch = [{"task_id": "c", "type": "log", "data": {"level": "info", "message": "b"}}] * 20
    singles = [api.append("c", "log") for _ in range(20)]
    batches = [api.batch(batch) for _ in range(3)]
    responses = await asyncio.gather(*singles, *batches)
    assert all(r.status_code in (200, 201) for r in responses)
    history = await api.history("c")
    assert [e["version"] for e in history] == list(range(1, 2 + 20 + 60))
