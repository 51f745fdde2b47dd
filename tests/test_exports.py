"""Exports of /v1/events as NDJSON and CSV: exactly the JSON selection, streamed."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx
import pytest

from tests.helpers import CSV_HEADER, Service, assert_ok, assert_problem

NDJSON = "application/x-ndjson"
CSV = "text/csv"


async def seed(service: Service) -> list[dict[str, Any]]:
    api = service.api
    await api.create_task(id="a", kind="alpha", title="A", metadata={"k": "v, with comma"})
    await api.create_task(id="b", kind="beta")
    await api.event("a", "started", {"worker": 'w "quoted", comma'})
    await api.event("b", "log", {"level": "info", "message": "line1\nline2\r\n\ttab, ü 😀"})
    await api.event("a", "progress", {"percent": 12.5, "message": "half"})
    await api.event("a", "succeeded", {"result": {"nested": [1, {"x": None}], "big": 2**53}})
    await api.event("b", "failed", {"error": {"message": "m", "code": "E"}})
    items = [{"task_id": "c", "type": "log", "data": {}}]  # 404 item: exports nothing
    assert_ok(await api.batch(items))
    return await api.all_events()


async def export(service: Service, accept: str, **params: Any) -> httpx.Response:
    response = await service.api.get("/v1/events", params=params, headers={"Accept": accept})
    assert response.status_code == 200, response.text
    return response


def parse_ndjson(text: str) -> list[dict[str, Any]]:
    lines = text.split("\n")
    assert lines[-1] == "", "NDJSON ends every line with a newline"
    return [json.loads(line) for line in lines[:-1]]


def parse_csv(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    assert lines[0] == CSV_HEADER
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == len(lines), "one event per line: no field spans lines"
    events = []
    for row in rows[1:]:
        seq, task_id, tenant, version, type, data, time = row
        events.append(
            {
                "seq": int(seq),
                "task_id": task_id,
                "tenant": tenant,
                "version": int(version),
                "type": type,
                "data": json.loads(data),
                "time": time,
            }
        )
    return events


async def test_ndjson_equals_the_json_selection(service: Service) -> None:
    everything = await seed(service)
    response = await export(service, NDJSON)
    assert response.headers["content-type"].startswith(NDJSON)
    assert parse_ndjson(response.text) == everything


async def test_csv_equals_the_json_selection(service: Service) -> None:
    everything = await seed(service)
    response = await export(service, CSV)
    assert response.headers["content-type"].startswith(CSV)
    assert response.text.splitlines()[0] == CSV_HEADER
    assert parse_csv(response.text) == everything


@pytest.mark.parametrize(
    "params",
    [
        {"task_id": "a"},
        {"type": "log"},
        {"kind": "beta"},
        {"after": "3"},
        {"kind": "alpha", "type": "progress"},
    ],
)
async def test_exports_apply_the_filters(service: Service, params: dict[str, str]) -> None:
    await seed(service)
    expected = await service.api.all_events(**params)
    assert expected
    assert parse_ndjson((await export(service, NDJSON, **params)).text) == expected
    assert parse_csv((await export(service, CSV, **params)).text) == expected


async def test_exports_apply_since_and_until(service: Service) -> None:
    everything = await seed(service)
    params = {"since": everything[1]["time"], "until": everything[5]["time"]}
    expected = await service.api.all_events(**params)
    assert expected == [e for e in everything if params["since"] <= e["time"] < params["until"]]
    assert parse_ndjson((await export(service, NDJSON, **params)).text) == expected
    assert parse_csv((await export(service, CSV, **params)).text) == expected


async def test_exports_ignore_limit(service: Service) -> None:
    everything = await seed(service)
    assert parse_ndjson((await export(service, NDJSON, limit=2)).text) == everything
    assert parse_csv((await export(service, CSV, limit=2)).text) == everything


async def test_exports_cover_more_than_one_page(service: Service) -> None:
    api = service.api
    await api.create_task(id="many")
    items = [{"task_id": "many", "type": "log", "data": {"level": "info", "message": str(i)}}
             for i in range(250)]  # fmt: skip
    assert_ok(await api.batch(items))
    everything = await api.all_events()
    assert len(everything) == 251
    assert parse_ndjson((await export(service, NDJSON)).text) == everything
    assert parse_csv((await export(service, CSV)).text) == everything


async def test_empty_exports(service: Service) -> None:
    assert (await export(service, NDJSON)).text == ""
    assert (await export(service, CSV)).text.splitlines() == [CSV_HEADER]


async def test_exports_never_show_another_tenant(service: Service) -> None:
    await seed(service)
    other = service.as_(tenant="t2")
    await other.create_task(id="a", kind="alpha")
    response = await other.get("/v1/events", headers={"Accept": NDJSON})
    rows = parse_ndjson(response.text)
    assert [(row["tenant"], row["task_id"], row["type"]) for row in rows] == [
        ("t2", "a", "created")
    ]
    response = await other.get("/v1/events", headers={"Accept": CSV})
    assert [row["tenant"] for row in parse_csv(response.text)] == ["t2"]


@pytest.mark.parametrize("accept", ["application/json", "*/*", "application/*"])
async def test_json_accepts_give_json(service: Service, accept: str) -> None:
    everything = await seed(service)
    response = await service.api.get("/v1/events", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["items"] == everything


@pytest.mark.parametrize("accept", ["application/xml", "text/html", "image/png"])
async def test_unservable_accept_is_406(service: Service, accept: str) -> None:
    await seed(service)
    response = await service.api.get("/v1/events", headers={"Accept": accept})
    assert_problem(response, 406, "not_acceptable")


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/xml, text/csv", CSV),
        ("text/csv;q=0.2, application/x-ndjson", NDJSON),
        ("application/x-ndjson;q=0.5, text/csv;q=0.9", CSV),
    ],
)
async def test_accept_negotiation_picks_a_servable_type(
    service: Service, accept: str, expected: str
) -> None:
    await seed(service)
    response = await service.api.get("/v1/events", headers={"Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(expected)


@pytest.mark.parametrize("path", ["/v1/tasks", "/v1/tasks/a", "/v1/tasks/a/events"])
async def test_json_endpoints_refuse_an_unservable_accept_with_406(
    service: Service, path: str
) -> None:
    await seed(service)
    response = await service.api.get(path, headers={"Accept": "application/xml"})
    assert_problem(response, 406, "not_acceptable")


async def test_exports_validate_the_query(service: Service) -> None:
    for accept in (NDJSON, CSV):
        response = await service.api.get(
            "/v1/events", params={"after": "-1"}, headers={"Accept": accept}
        )
        assert_problem(response, 422, "validation_error")


async def test_exports_need_events_read(service: Service) -> None:
    reader = service.as_(scopes="tasks:read tasks:write")
    for accept in (NDJSON, CSV):
        response = await reader.get("/v1/events", headers={"Accept": accept})
        assert_problem(response, 403, "forbidden")
