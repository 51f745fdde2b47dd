"""Problem bodies, and the order checks apply in: 401, 403, 429, 413, 415, 400, 422, 404, 409."""

from __future__ import annotations

import json

import pytest

from tests.helpers import Service, assert_field_errors, assert_problem

SMALL_BODY = {"max_body_bytes": 4096, "max_event_bytes": 1024}
READ_ONLY = "tasks:read events:read"


def big_body(size: int = 10_000) -> str:
    return json.dumps({"kind": "k", "title": "x" * size})


# ----------------------------------------------------------------------------- bodies


async def test_every_problem_body_has_the_five_members(service: Service) -> None:
    api = service.api
    await api.create_task(id="done")
    await api.event("done", "succeeded")
    await api.create_task(id="open")
    cases = [
        (await service.client.get("/v1/tasks"), 401, "unauthorized"),
        (await service.as_(scopes="tasks:write").get("/v1/tasks"), 403, "forbidden"),
        (await api.get("/v1/tasks/nope"), 404, "task_not_found"),
        (await api.create_task_response(id="done"), 409, "task_exists"),
        (await api.append("done", "log"), 409, "invalid_transition"),
        (await api.append("open", "log", expected_version=5), 409, "version_conflict"),
        (await api.post("/v1/tasks", json={"kind": 1}), 422, "validation_error"),
        (await api.post_raw("/v1/tasks", "{"), 400, "validation_error"),
        (await api.post_raw("/v1/tasks", "{}", content_type="text/plain"), 415,
         "unsupported_media_type"),
        (await api.get("/v1/nothing-here"), 404, "not_found"),
        (await api.request("DELETE", "/v1/tasks/done"), 405, "method_not_allowed"),
        (await api.get("/v1/events", headers={"Accept": "application/xml"}), 406,
         "not_acceptable"),
    ]  # fmt: skip
    for response, status, code in cases:
        assert_problem(response, status, code)


async def test_version_conflict_or_invalid_transition_for_stale_version_on_finished_task(
    service: Service,
) -> None:
    await service.api.create_task(id="done")
    await service.api.event("done", "succeeded")
    response = await service.api.append("done", "log", expected_version=1)
    assert response.status_code == 409
    assert_problem(response, 409)
    assert response.json()["code"] in ("version_conflict", "invalid_transition")


async def test_unknown_route_is_404_not_found_with_or_without_token(service: Service) -> None:
    for path in ("/nothing", "/v2/tasks", "/v1/tasks/a/b/c"):
        assert_problem(await service.api.get(path), 404, "not_found")
    assert_problem(await service.client.get("/nothing"), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/tasks/x"),
        ("PUT", "/v1/tasks/x"),
        ("PATCH", "/v1/tasks"),
        ("DELETE", "/v1/tasks"),
        ("PUT", "/v1/tasks/x/events"),
        ("GET", "/v1/events/batch"),
        ("POST", "/v1/events"),
        ("POST", "/healthz"),
    ],
)
async def test_wrong_method_is_405(service: Service, method: str, path: str) -> None:
    assert_problem(await service.api.request(method, path), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/tasks", {"kind": 7}, "kind"),
        ("/v1/tasks", {"kind": "k", "title": ["t"]}, "title"),
        ("/v1/tasks/t/events", {"type": "progress", "data": {"percent": 200}}, "percent"),
        ("/v1/tasks/t/events", {"type": "log", "data": {}, "expected_version": "x"},
         "expected_version"),
    ],
)  # fmt: skip
async def test_validation_errors_name_the_offending_fields(
    service: Service, path: str, body: dict[str, object], field: str
) -> None:
    await service.api.create_task(id="t")
    problem = assert_problem(await service.api.post(path, json=body), 422, "validation_error")
    assert_field_errors(problem, field)


async def test_query_validation_errors_name_the_parameter(service: Service) -> None:
    body = assert_problem(
        await service.api.get("/v1/events", params={"limit": "0", "after": "-1"}),
        422,
        "validation_error",
    )
    assert_field_errors(body, "limit")


# ----------------------------------------------------------------------------- media types


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/xml"],
)
async def test_non_json_body_is_415(service: Service, content_type: str) -> None:
    await service.api.create_task(id="t")
    before = await service.api.snapshot("t")
    for path, body in (
        ("/v1/tasks", '{"kind": "k"}'),
        ("/v1/tasks/t/events", '{"type": "started", "data": {}}'),
        ("/v1/events/batch", '{"events": [{"task_id": "t", "type": "started", "data": {}}]}'),
    ):
        response = await service.api.post_raw(path, body, content_type=content_type)
        assert_problem(response, 415, "unsupported_media_type")
    assert await service.api.snapshot("t") == before
    assert len((await service.api.list_tasks())["items"]) == 1


async def test_body_without_content_type_is_415(service: Service) -> None:
    response = await service.api.request("POST", "/v1/tasks", content=b'{"kind": "k"}')
    assert "content-type" not in response.request.headers
    assert_problem(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/json;charset=UTF-8"]
)
async def test_json_with_charset_is_accepted(service: Service, content_type: str) -> None:
    response = await service.api.post_raw("/v1/tasks", '{"kind": "k"}', content_type=content_type)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "body", ['{"kind": ', "{'kind': 'k'}", '{"kind": "k",}', "", "kind=k", '{"kind": "k"} x']
)
async def test_malformed_json_is_400(service: Service, body: str) -> None:
    for path in ("/v1/tasks", "/v1/events/batch"):
        assert_problem(await service.api.post_raw(path, body), 400, "validation_error")
    await service.api.create_task(id="t")
    assert_problem(await service.api.post_raw("/v1/tasks/t/events", body), 400, "validation_error")


@pytest.mark.parametrize("body", ["[]", '"kind"', "null", "42", "true"])
async def test_json_that_is_not_an_object_is_422(service: Service, body: str) -> None:
    assert_problem(await service.api.post_raw("/v1/tasks", body), 422, "validation_error")


# ----------------------------------------------------------------------------- check order


@pytest.mark.parametrize("service", [SMALL_BODY], indirect=True)
async def test_401_comes_before_everything(service: Service) -> None:
    anonymous = service.anonymous
    assert_problem(await anonymous.post_raw("/v1/tasks", big_body()), 401)
    assert_problem(await anonymous.post_raw("/v1/tasks", "{", content_type="text/plain"), 401)
    assert_problem(await anonymous.post_raw("/v1/tasks", "{"), 401)
    assert_problem(await anonymous.post("/v1/tasks", json={"kind": 1}), 401)
    assert_problem(await anonymous.get("/v1/tasks/none"), 401)
    assert_problem(await anonymous.get("/v1/tasks", params={"limit": "0"}), 401)


@pytest.mark.parametrize("service", [SMALL_BODY], indirect=True)
async def test_403_comes_before_413_415_400_422_404_409(service: Service) -> None:
    await service.api.create_task(id="t")
    reader = service.as_(scopes=READ_ONLY)
    writer = service.as_(scopes="tasks:write")
    assert_problem(await reader.post_raw("/v1/tasks", big_body()), 403, "forbidden")
    assert_problem(await reader.post_raw("/v1/tasks", "{", content_type="text/plain"), 403)
    assert_problem(await reader.post_raw("/v1/tasks", "{"), 403)
    assert_problem(await reader.post("/v1/tasks", json={"kind": 1}), 403)
    assert_problem(await reader.append("none", "log"), 403)
    assert_problem(await reader.create_task_response(id="t"), 403)
    assert_problem(await writer.get("/v1/tasks/none"), 403)
    assert_problem(await writer.get("/v1/events", params={"limit": "0"}), 403)


@pytest.mark.parametrize("service", [SMALL_BODY], indirect=True)
async def test_413_comes_before_415_400_422_404(service: Service) -> None:
    api = service.api
    assert_problem(await api.post_raw("/v1/tasks", big_body(), content_type="text/plain"), 413)
    assert_problem(await api.post_raw("/v1/tasks", "{" + "x" * 10_000), 413)
    assert_problem(
        await api.post_raw("/v1/tasks", json.dumps({"kind": 5, "pad": "x" * 10_000})), 413
    )
    too_big_data = {"type": "log", "data": {"level": "info", "message": "x" * 2000}}
    assert_problem(await api.post("/v1/tasks/none/events", json=too_big_data), 413)
    bogus_big = {"type": "bogus", "data": {"pad": "x" * 2000}}
    await api.create_task(id="t")
    assert_problem(await api.post("/v1/tasks/t/events", json=bogus_big), 413, "payload_too_large")


async def test_415_comes_before_400_and_422(service: Service) -> None:
    api = service.api
    assert_problem(await api.post_raw("/v1/tasks", "{", content_type="text/plain"), 415)
    assert_problem(await api.post_raw("/v1/tasks", '{"kind": 5}', content_type="text/plain"), 415)


async def test_400_comes_before_422_and_404(service: Service) -> None:
    assert_problem(await service.api.post_raw("/v1/tasks/none/events", "{"), 400)


async def test_422_comes_before_404(service: Service) -> None:
    api = service.api
    assert_problem(await api.append("none", "bogus", {}), 422)
    assert_problem(await api.append("none", "progress", {"percent": 500}), 422)
    assert_problem(await api.append("none", "log", expected_version=-1), 422)
    assert_problem(await api.get("/v1/tasks/none/events", params={"limit": "0"}), 422)


async def test_422_comes_before_409(service: Service) -> None:
    api = service.api
    await api.create_task(id="done")
    await api.event("done", "succeeded")
    assert_problem(await api.append("done", "progress", {"percent": 500}), 422)
    assert_problem(await api.append("done", "bogus", {}), 422)
    assert_problem(await api.append("done", "log", {"level": "x"}, expected_version=1), 422)
    assert_problem(await api.create_task_response(id="done", kind=5), 422)


async def test_404_comes_before_409(service: Service) -> None:
    assert_problem(await service.api.append("none", "log", expected_version=7), 404)
