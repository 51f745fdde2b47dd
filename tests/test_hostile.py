"""Hostile input: always a 4xx problem or stored and returned intact; never a 5xx; a refusal
changes nothing."""

from __future__ import annotations

import base64
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import Api, Service, assert_problem, semantic

NUL = "\u0000"


def nested_text(depth: int) -> str:
    """JSON text nesting ``depth`` containers (alternating arrays and objects) around 1."""
    opening = "".join('{"k": ' if index % 2 else "[" for index in range(depth))
    closing = "".join("}" if index % 2 else "]" for index in reversed(range(depth)))
    return opening + "1" + closing


@contextlib.contextmanager
def deep_recursion() -> Iterator[None]:
    """Let Python's json module parse what the service may legitimately store and return."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def assert_refused(response: httpx.Response, *statuses: int) -> None:
    allowed = statuses or (400, 413, 422)
    assert response.status_code in allowed, (
        f"expected one of {allowed}, got {response.status_code}: {response.text[:300]}"
    )
    assert_problem(response, response.status_code)


async def refused_or_intact_event(api: Api, task_id: str, raw_body: str | bytes) -> None:
    """POST the raw body as an event: refused and nothing changed, or stored exactly as sent."""
    before = await api.snapshot(task_id)
    response = await api.post_raw(f"/v1/tasks/{task_id}/events", raw_body)
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    if response.status_code == 201:
        with deep_recursion():
            sent = semantic(json.loads(raw_body)["data"])
            assert semantic(response.json()["data"]) == sent
            assert semantic((await api.history(task_id))[-1]["data"]) == sent
        return
    assert_refused(response)
    assert await api.snapshot(task_id) == before


@pytest.fixture
async def api(service: Service) -> AsyncIterator[Api]:
    await service.api.create_task(id="h")
    await service.api.event("h", "started")
    yield service.api


# ----------------------------------------------------------------------------- NUL


@pytest.mark.parametrize(
    "data",
    [
        {"level": "info", "message": f"a{NUL}b"},
        {"level": "info", "message": "m", f"key{NUL}": 1},
        {"level": "info", "message": "m", "extra": [f"{NUL}"]},
        {"level": "info", "message": "m", "extra": {"deep": {f"{NUL}": f"{NUL}"}}},
    ],
)
async def test_nul_in_event_data(api: Api, data: dict[str, Any]) -> None:
    await refused_or_intact_event(api, "h", json.dumps({"type": "log", "data": data}))


@pytest.mark.parametrize(
    "body",
    [
        {"kind": f"k{NUL}"},
        {"kind": "k", "title": f"t{NUL}"},
        {"kind": "k", "metadata": {f"m{NUL}": f"v{NUL}"}},
        {"kind": "k", "id": f"a{NUL}b"},
    ],
)
async def test_nul_in_task_creation(service: Service, body: dict[str, Any]) -> None:
    response = await service.api.post("/v1/tasks", json=body)
    assert response.status_code < 500, response.text
    if response.status_code == 201:
        task = response.json()
        fetched = await service.api.task(task["id"])
        for name, value in body.items():
            assert fetched[name] == value
    else:
        assert_refused(response)
        assert (await service.api.list_tasks())["items"] == []


async def test_nul_in_batch_items(api: Api) -> None:
    before = await api.snapshot("h")
    items = [
        {"task_id": "h", "type": "log", "data": {"level": "info", "message": NUL}},
        {"task_id": f"h{NUL}", "type": "log", "data": {"level": "info", "message": "m"}},
        {"task_id": "h", "type": f"log{NUL}", "data": {"level": "info", "message": "m"}},
        {"task_id": "h", "type": "log", "data": {"level": "info", "message": "m"},
         "idempotency_key": f"k{NUL}"},
    ]  # fmt: skip
    response = await api.batch(items)
    if response.status_code == 422:  # refused whole as hostile JSON: nothing applied
        assert_problem(response, 422, "validation_error")
        assert await api.snapshot("h") == before
        return
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results[1:]] == [422, 422, 422]
    assert results[0]["status"] in (201, 422)
    if results[0]["status"] == 422:
        assert await api.snapshot("h") == before
    else:
        assert results[0]["event"]["data"]["message"] == NUL


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/tasks", {"kind": NUL}),
        ("/v1/tasks", {"status": NUL}),
        ("/v1/tasks", {"cursor": NUL}),
        ("/v1/events", {"task_id": f"h{NUL}"}),
        ("/v1/events", {"type": NUL}),
        ("/v1/events", {"kind": NUL}),
        ("/v1/events", {"since": NUL}),
        ("/v1/events", {"after": NUL}),
        ("/v1/tasks/h/events", {"after": NUL}),
    ],
)
async def test_nul_in_query_parameters(api: Api, path: str, params: dict[str, str]) -> None:
    response = await api.get(path, params=params)
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code != 200:
        assert_problem(response, response.status_code)
    else:
        assert response.json()["items"] == []


async def test_nul_in_task_id_path(api: Api) -> None:
    for path in ("/v1/tasks/h%00", "/v1/tasks/h%00/events"):
        response = await api.get(path)
        assert response.status_code in (400, 404, 422), response.text
        assert_problem(response, response.status_code)
    response = await api.post("/v1/tasks/h%00/events", json={"type": "log", "data": {}})
    assert response.status_code in (400, 404, 422), response.text


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("depth", [60, 63, 64, 65, 100, 1000])
async def test_deep_nesting_in_data(api: Api, depth: int) -> None:
    body = '{"type": "succeeded", "data": {"result": ' + nested_text(depth) + "}}"
    await refused_or_intact_event(api, "h", body)


async def test_absurd_nesting_as_raw_text(api: Api) -> None:
    depth = 100_000
    body = '{"type": "succeeded", "data": {"result": ' + "[" * depth + "]" * depth + "}}"
    await refused_or_intact_event(api, "h", body)


async def test_absurd_nesting_in_create_and_batch(service: Service) -> None:
    depth = 50_000
    deep = "[" * depth + "]" * depth
    for path, body in (
        ("/v1/tasks", '{"kind": "k", "metadata": {"x": ' + deep + "}}"),
        ("/v1/events/batch", '{"events": ' + deep + "}"),
        ("/v1/events/batch", deep),
    ):
        response = await service.api.post_raw(path, body)
        assert_refused(response)
    assert (await service.api.list_tasks())["items"] == []


@pytest.mark.parametrize(
    "value",
    [
        str(2**63 - 1),
        str(2**63),
        str(2**64),
        str(-(2**63)),
        str(-(2**63) - 1),
        str(10**30),
        str(-(10**40)),
        str(10**400),
        "1" + "0" * 5000,
        "-" + "9" * 20000,
    ],
    ids=lambda text: text if len(text) < 30 else f"{len(text)}-digits",
)
async def test_big_integers_in_data(api: Api, value: str) -> None:
    body = '{"type": "succeeded", "data": {"result": {"n": ' + value + "}}}"
    await refused_or_intact_event(api, "h", body)


@pytest.mark.parametrize(
    "number", ["1e400", "-1e400", "1e-400", "123456789012345678901234567890.5"]
)
async def test_extreme_floats_in_data(api: Api, number: str) -> None:
    before = await api.snapshot("h")
    body = '{"type": "succeeded", "data": {"result": ' + number + "}}"
    response = await api.post_raw("/v1/tasks/h/events", body)
    assert response.status_code < 500, response.text
    if response.status_code == 201:
        assert response.json()["data"]["result"] == pytest.approx(float(number))
    else:
        assert_refused(response)
        assert await api.snapshot("h") == before


@pytest.mark.parametrize(
    "number",
    [str(2**63), str(2**64), str(10**30), "-1", str(-(2**64)), "1e309", "9" * 5000],
    ids=lambda text: text if len(text) < 30 else f"{len(text)}-digits",
)
async def test_big_integers_as_expected_version(api: Api, number: str) -> None:
    before = await api.snapshot("h")
    body = '{"type": "log", "data": {"level": "info", "message": "m"}, "expected_version": '
    response = await api.post_raw("/v1/tasks/h/events", body + number + "}")
    assert response.status_code in (409, 422), response.text
    assert_problem(response, response.status_code)
    assert await api.snapshot("h") == before


@pytest.mark.parametrize(
    "number",
    [str(2**63), str(2**64), str(10**30), "0x10", "12abc", "--1", "9" * 5000],
    ids=lambda text: text if len(text) < 30 else f"{len(text)}-digits",
)
async def test_big_or_odd_integers_in_query(api: Api, number: str) -> None:
    targets = [
        ("/v1/tasks", "limit"),
        ("/v1/events", "limit"),
        ("/v1/events", "after"),
        ("/v1/tasks/h/events", "after"),
        ("/v1/tasks/h/events", "limit"),
    ]
    for path, name in targets:
        response = await api.get(path, params={name: number})
        if name == "after" and number.isdigit() and number.isascii():
            assert response.status_code in (200, 422), response.text
            if response.status_code == 200:
                assert response.json()["items"] == []
            continue
        assert_problem(response, 422, "validation_error")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "nan", "inf"])
async def test_nan_and_infinity_literals(api: Api, literal: str) -> None:
    before = await api.snapshot("h")
    for body in (
        '{"type": "succeeded", "data": {"result": ' + literal + "}}",
        '{"type": "progress", "data": {"percent": ' + literal + "}}",
        '{"type": "log", "data": {"level": "info", "message": "m"}, "expected_version": '
        + literal
        + "}",
    ):
        response = await api.post_raw("/v1/tasks/h/events", body)
        assert_refused(response, 400, 422)
    assert await api.snapshot("h") == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", 5),
        ("type", None),
        ("type", ["log"]),
        ("type", {"name": "log"}),
        ("expected_version", True),
        ("expected_version", "2"),
        ("expected_version", 2.0),
        ("expected_version", 2.5),
        ("expected_version", [2]),
        ("data", "text"),
        ("data", 1),
        ("data", [{"level": "info"}]),
    ],
)
async def test_wrong_types_in_event_body(api: Api, field: str, value: Any) -> None:
    before = await api.snapshot("h")
    body: dict[str, Any] = {"type": "log", "data": {"level": "info", "message": "m"}}
    body[field] = value
    response = await api.post("/v1/tasks/h/events", json=body)
    assert_problem(response, 422, "validation_error")
    assert await api.snapshot("h") == before


@pytest.mark.parametrize(
    "data",
    [
        {"percent": True},
        {"done": True},
        {"percent": 50, "total": True, "done": 1},
        {"percent": [50]},
        {"percent": {"value": 50}},
    ],
)
async def test_booleans_and_containers_are_not_numbers(api: Api, data: dict[str, Any]) -> None:
    before = await api.snapshot("h")
    response = await api.append("h", "progress", data)
    assert_problem(response, 422, "validation_error")
    assert await api.snapshot("h") == before


async def test_lone_surrogates(api: Api) -> None:
    await refused_or_intact_event(
        api, "h", '{"type": "log", "data": {"level": "info", "message": "\\ud800"}}'
    )
    await refused_or_intact_event(
        api, "h", '{"type": "log", "data": {"level": "info", "message": "\\udfff\\ud800x"}}'
    )


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/tasks/h/events",
            b'{"type": "log", "data": {"level": "info", "message": "\xff\xfe"}}',
        ),
        ("/v1/tasks", b'{"kind": "k\xc3"}'),
        ("/v1/events/batch", b'{"events": [{"task_id": "h", "type": "log\xed\xa0\x80"}]}'),
    ],
    ids=["event", "task", "batch"],
)
async def test_invalid_utf8_body_is_400_or_422(api: Api, path: str, body: bytes) -> None:
    before = await api.snapshot("h")
    assert_refused(await api.post_raw(path, body), 400, 422)
    assert await api.snapshot("h") == before
    assert len((await api.list_tasks())["items"]) == 1


async def test_escaped_unicode_round_trips(api: Api) -> None:
    body = '{"type": "log", "data": {"level": "info", "message": "\\u00e9\\ud83d\\ude00\\u2028"}}'
    await refused_or_intact_event(api, "h", body)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'\xef\xbb\xbf{"kind": "k"}', {}),
        (b'{"kind": "k"}', {"Content-Encoding": "gzip"}),
        (b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}),
        (b'{"kind": "k"}', {"Content-Type": "application/json; charset=latin-1"}),
        ('{"kind": "k"}'.encode("utf-16"), {"Content-Type": "application/json; charset=utf-16"}),
    ],
)
async def test_odd_encodings_never_crash(
    service: Service, body: bytes, headers: dict[str, str]
) -> None:
    response = await service.api.post_raw("/v1/tasks", body, headers=headers)
    assert response.status_code < 500, response.text
    if response.status_code != 201:
        assert_problem(response, response.status_code)
        assert (await service.api.list_tasks())["items"] == []


async def test_duplicate_keys_never_crash(api: Api) -> None:
    body = '{"type": "log", "type": "started", "data": {"level": "info", "message": "m"}}'
    response = await api.post_raw("/v1/tasks/h/events", body)
    assert response.status_code < 500, response.text


async def test_many_keys_in_data_within_the_size_limit(api: Api) -> None:
    result = {f"k{index}": index for index in range(3000)}
    await refused_or_intact_event(
        api, "h", json.dumps({"type": "succeeded", "data": {"result": result}})
    )


# ----------------------------------------------------------------------------- sizes


async def test_data_over_max_event_bytes_is_413(api: Api, service: Service) -> None:
    before = await api.snapshot("h")
    limit = service.settings.max_event_bytes
    response = await api.append("h", "log", {"level": "info", "message": "x" * limit})
    assert_problem(response, 413, "payload_too_large")
    assert await api.snapshot("h") == before


async def test_huge_body_is_413(api: Api, service: Service) -> None:
    before = await api.snapshot("h")
    size = service.settings.max_body_bytes + 1024
    body = '{"type": "log", "data": {"level": "info", "message": "' + "x" * size + '"}}'
    response = await api.post_raw("/v1/tasks/h/events", body)
    assert_problem(response, 413, "payload_too_large")
    response = await api.post_raw("/v1/tasks", '{"kind": "k", "title": "' + "x" * size + '"}')
    assert_problem(response, 413, "payload_too_large")
    assert await api.snapshot("h") == before


@pytest.mark.parametrize("service", [{"max_body_bytes": 4096}], indirect=True)
async def test_huge_chunked_body_without_length_is_413(api: Api) -> None:
    before = await api.snapshot("h")

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"type": "log", "data": {"level": "info", "message": "'
        for _ in range(64):
            yield b"x" * 1024
        yield b'"}}'

    response = await api.request(
        "POST",
        "/v1/tasks/h/events",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")
    assert await api.snapshot("h") == before


async def test_long_strings_outside_data(service: Service) -> None:
    api = service.api
    for body in ({"kind": "k" * 100_000}, {"kind": "k", "title": "t" * 100_000}):
        response = await api.post("/v1/tasks", json=body)
        assert response.status_code < 500, response.text
        if response.status_code == 201:
            task = await api.task(response.json()["id"])
            assert (task["kind"], task["title"]) == (body["kind"], body.get("title"))
        else:
            assert_refused(response, 413, 422)


async def test_long_idempotency_key_and_task_id_in_path(api: Api) -> None:
    response = await api.append("h", "log", idempotency_key="k" * 10_000)
    assert_problem(response, 422, "validation_error")
    response = await api.get("/v1/tasks/" + "a" * 5000)
    assert response.status_code in (404, 414, 422), response.text


# ----------------------------------------------------------------------------- queries


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-01:00",
        "2026-11-28T01:02:03.123456789Z",
        "2026-11-28T24:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-28T01:02:03+99:00",
        " 2026-11-28T01:02:03Z",
        "x" * 10_000,
    ],
    ids=lambda text: text if len(text) < 40 else "very-long",
)
async def test_extreme_times_in_since_and_until(api: Api, value: str) -> None:
    for name in ("since", "until"):
        response = await api.get("/v1/events", params={name: value})
        assert response.status_code in (200, 422), response.text
        if response.status_code == 422:
            assert_problem(response, 422, "validation_error")
        for accept in ("application/x-ndjson", "text/csv"):
            exported = await api.get("/v1/events", params={name: value}, headers={"Accept": accept})
            assert exported.status_code == response.status_code, exported.text


async def test_repeated_and_spaced_query_parameters_never_crash(api: Api) -> None:
    for path, params in (
        ("/v1/tasks", [("limit", "1"), ("limit", "2")]),
        ("/v1/tasks", [("status", "running"), ("status", "pending")]),
        ("/v1/events", [("after", "1"), ("after", "x")]),
        ("/v1/events", [("limit", " 5")]),
        ("/v1/events", [("type", "log"), ("type", "started")]),
        ("/v1/tasks/h/events", [("after", ""), ("limit", "")]),
    ):
        response = await api.get(path, params=params)
        assert response.status_code in (200, 422), (path, params, response.text)
        if response.status_code == 422:
            assert_problem(response, 422, "validation_error")


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("", id="empty"),
        pytest.param("=", id="padding"),
        pytest.param("!!!", id="not-base64"),
        pytest.param(b64("null"), id="null"),
        pytest.param(b64("[]"), id="empty-list"),
        pytest.param(b64('{"a": 1}'), id="object"),
        pytest.param(b64('["2026-11-28T01:02:03Z"]'), id="one-member"),
        pytest.param(b64('["2026-11-28T01:02:03+00:00", "a", "b"]'), id="three-members"),
        pytest.param(b64('["2026-11-28T01:02:03+00:00", 5]'), id="id-not-text"),
        pytest.param(b64('["0001-01-01T00:00:00+01:00", "a"]'), id="time-before-year-1-utc"),
        pytest.param(b64('["9999-12-31T23:59:59-01:00", "a"]'), id="time-after-year-9999-utc"),
        pytest.param(b64('["2026-11-28T01:02:03+00:00", "a\\u0000"]'), id="nul-in-id"),
        pytest.param(b64("[" * 10_000 + "]" * 10_000), id="deep-nesting"),
        pytest.param("A" * 20_000, id="long"),
    ],
)
async def test_forged_cursors_never_crash(api: Api, cursor: str) -> None:
    response = await api.get("/v1/tasks", params={"cursor": cursor})
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        assert_problem(response, 422, "validation_error")
