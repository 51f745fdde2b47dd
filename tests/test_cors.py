"""Browsers on another origin (TASKSTREAM_CORS_ORIGINS): preflights, fetch answers, streams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from service.settings import Settings
from tests.helpers import Service, assert_problem
from tests.sse import SseClient

APP = "https://app.example.com"
OTHER_APP = "http://localhost:5173"
EVIL = "https://evil.example.net"
ORIGINS = {"cors_origins": f"{APP}, {OTHER_APP}/"}
EXPOSED = {"retry-after", "location", "cancel-requested"}
REQUESTED = "authorization, content-type, idempotency-key, last-event-id"


def header_set(value: str | None) -> set[str]:
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


def preflight(method: str, origin: str, headers: str = REQUESTED) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def assert_allowed(response: httpx.Response, origin: str) -> None:
    assert response.headers.get("access-control-allow-origin") == origin, response.headers
    assert "origin" in header_set(response.headers.get("vary")), response.headers
    assert "access-control-allow-credentials" not in response.headers


cors_service = pytest.mark.parametrize("service", [ORIGINS], indirect=True)


@cors_service
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/tasks"),
        ("GET", "/v1/tasks/t"),
        ("POST", "/v1/tasks/t/events"),
        ("POST", "/v1/events/batch"),
        ("GET", "/v1/events"),
        ("GET", "/v1/tasks/t/stream"),
        ("GET", "/v1/stream"),
    ],
)
async def test_preflight_from_an_allowed_origin(service: Service, method: str, path: str) -> None:
    for origin in (APP, OTHER_APP):
        response = await service.client.options(path, headers=preflight(method, origin))
        assert response.status_code == 204, response.text
        assert_allowed(response, origin)
        methods = header_set(response.headers["access-control-allow-methods"])
        assert methods == {"get", "post", "options"}
        assert header_set(REQUESTED) <= header_set(response.headers["access-control-allow-headers"])
        assert int(response.headers["access-control-max-age"]) > 0


@cors_service
async def test_preflight_is_refused_for_other_origins_methods_and_headers(
    service: Service,
) -> None:
    for headers in (
        preflight("POST", EVIL),
        preflight("POST", APP.replace("https", "http")),
        preflight("POST", APP + ".evil.net"),
        preflight("DELETE", APP),
        preflight("POST", APP, "authorization, x-forwarded-user"),
    ):
        response = await service.client.options("/v1/tasks", headers=headers)
        assert response.status_code >= 400, headers
        assert response.status_code < 500, headers
        assert "access-control-allow-origin" not in response.headers, headers


@cors_service
async def test_fetch_answers_carry_cors_headers(service: Service) -> None:
    headers = {"Origin": APP, **service.auth()}
    created = await service.client.post("/v1/tasks", json={"kind": "k"}, headers=headers)
    assert created.status_code == 201
    assert_allowed(created, APP)
    assert header_set(created.headers["access-control-expose-headers"]) == EXPOSED
    # Refusals too, so that the page can read why (a 401 with its problem body).
    refused = await service.client.get("/v1/tasks", headers={"Origin": APP})
    assert_problem(refused, 401, "unauthorized")
    assert_allowed(refused, APP)
    # Another origin gets no permission to read the answer.
    other = await service.client.get("/v1/tasks", headers={"Origin": EVIL, **service.auth()})
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers


@cors_service
async def test_event_source_from_an_allowed_origin(service: Service) -> None:
    """An EventSource sends a simple GET with Origin (the token in the query): each kind of
    stream answer carries the CORS headers: live, ended at once, refused."""
    await service.api.create_task(id="live")
    await service.api.create_task(id="done")
    await service.api.bring_to("done", "succeeded")
    token = service.token()
    origin = {"Origin": APP}
    for path in ("/v1/tasks/live/stream", "/v1/stream", "/v1/tasks/done/stream"):
        async with await SseClient.open(
            service.base_url, path, token=token, token_in_query=True, headers=origin
        ) as client:
            assert client.status == 200, path
            assert client.header("access-control-allow-origin") == APP, (path, client.headers)
            assert "origin" in header_set(client.header("vary")), path
            assert header_set(client.header("access-control-expose-headers")) == EXPOSED
            assert client.header("content-type") == "text/event-stream"
    async with await SseClient.open(
        service.base_url, "/v1/stream", token="bad", token_in_query=True, headers=origin
    ) as client:
        assert client.status == 401
        assert client.header("access-control-allow-origin") == APP


@cors_service
@pytest.mark.parametrize(
    "kind",
    [
        "task",
        "healthz",
        "stream ended at once",
    ],
)
async def test_an_origin_is_never_granted_to_a_later_answer(service: Service, kind: str) -> None:
    """Permission for one request's origin must not stick to the answers that follow."""
    await service.api.create_task(id="done")
    await service.api.bring_to("done", "succeeded")
    query = {"access_token": service.token()}
    path, options = {
        "task": ("/v1/tasks/done", {"headers": service.auth()}),
        "healthz": ("/healthz", {}),
        "stream ended at once": ("/v1/tasks/done/stream", {"params": query}),
    }[kind]
    first = await get(service, path, options, {"Origin": APP})
    assert first.headers.get("access-control-allow-origin") == APP, path
    for origin in ({"Origin": EVIL}, {}):
        later = await get(service, path, options, origin)
        assert "access-control-allow-origin" not in later.headers, (path, origin, later.headers)


async def get(
    service: Service, path: str, options: dict[str, Any], origin: dict[str, str]
) -> httpx.Response:
    return await service.client.get(
        path, params=options.get("params"), headers={**options.get("headers", {}), **origin}
    )


async def test_without_origins_there_are_no_cors_headers(service: Service) -> None:
    response = await service.client.options("/v1/tasks", headers=preflight("POST", APP))
    assert "access-control-allow-origin" not in response.headers
    assert response.status_code < 500
    answer = await service.client.get("/v1/tasks", headers={"Origin": APP, **service.auth()})
    assert answer.status_code == 200
    assert not [name for name in answer.headers if name.startswith("access-control-")]


@pytest.mark.parametrize(
    "value", ["*", "https://*.example.com", "app.example.com", "https://app.example.com/path"]
)
def test_only_exact_origins_are_accepted(value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(cors_origins=value)


def test_origins_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("TASKSTREAM_CORS_ORIGINS", " https://A.example.com/ ,,http://b:8080")
    assert Settings().cors_origins == ("https://a.example.com", "http://b:8080")
    monkeypatch.setenv("TASKSTREAM_CORS_ORIGINS", "")
    assert Settings().cors_origins == ()
