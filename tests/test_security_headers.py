"""Security headers: a strict policy for the page and its files, no-sniff and no-store for the
API, and each header exactly once whatever built the answer."""

from __future__ import annotations

import re

import httpx

from service.api.dashboard import PAGE, STATIC
from tests.helpers import Service
from tests.sse import SseClient


def directives(response: httpx.Response) -> dict[str, str]:
    policies = response.headers.get_list("content-security-policy")
    assert len(policies) == 1, policies
    found = {}
    for directive in policies[0].split(";"):
        name, _, value = directive.strip().partition(" ")
        found[name] = value
    return found


def assert_once(response: httpx.Response, name: str, value: str) -> None:
    assert response.headers.get_list(name) == [value], (name, response.headers.get_list(name))


def assert_page_headers(response: httpx.Response) -> None:
    policy = directives(response)
    assert policy["default-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'"
    assert policy["base-uri"] == "'none'"
    for name in ("default-src", "script-src", "style-src", "connect-src"):
        assert "unsafe" not in policy.get(name, ""), policy
        assert "*" not in policy.get(name, ""), policy
    assert_once(response, "x-content-type-options", "nosniff")
    assert_once(response, "referrer-policy", "no-referrer")
    assert_once(response, "x-frame-options", "DENY")


async def test_the_page_has_a_strict_policy(service: Service) -> None:
    response = await service.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert_page_headers(response)


def test_the_page_needs_nothing_the_policy_forbids() -> None:
    """No inline script, style or handler: under the policy they would not run."""
    page = (STATIC / PAGE).read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "an inline script needs its hash"
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page), "event handler attributes are inline scripts"
    assert "javascript:" not in page


async def test_open_endpoints_outside_the_api_get_the_page_headers(service: Service) -> None:
    for path in ("/healthz", "/schema/openapi.json", "/static/missing.js"):
        assert_page_headers(await service.client.get(path))


async def test_api_answers_are_not_sniffed_nor_stored(service: Service) -> None:
    api = service.api
    answers = [
        await api.create_task_response(id="t"),
        await api.get("/v1/tasks/t"),
        await api.get("/v1/tasks"),
        await api.get("/v1/events", headers={"Accept": "text/csv"}),
        await api.get("/v1/events", headers={"Accept": "application/x-ndjson"}),
        await api.get("/v1/tasks/missing"),
        await service.client.get("/v1/tasks"),  # 401 from the authentication middleware
        await api.get("/v1/no-such-route"),  # 404 from the router
        await api.post_raw("/v1/tasks", "{"),  # 400
    ]
    for response in answers:
        where = f"{response.request.method} {response.request.url} {response.status_code}"
        assert response.headers.get_list("x-content-type-options") == ["nosniff"], where
        assert response.headers.get_list("cache-control") == ["no-store"], where
        assert "content-security-policy" not in response.headers, where


async def test_streams_keep_their_own_cache_control(service: Service) -> None:
    await service.api.create_task(id="t")
    async with await SseClient.open(
        service.base_url, "/v1/tasks/t/stream", token=service.token()
    ) as client:
        assert client.status == 200
        assert [value for name, value in client.headers if name == "cache-control"] == ["no-cache"]
        assert client.header("x-content-type-options") == "nosniff"
