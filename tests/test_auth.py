"""Tokens (401), scopes (403) and tenant isolation (404, never mixed)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from tests.helpers import Service, assert_created, assert_ok, assert_problem

# (method, path, json body) of every /v1 endpoint of this stage, against task "t".
ENDPOINTS: list[tuple[str, str, Any]] = [
    ("POST", "/v1/tasks", {"kind": "k"}),
    ("GET", "/v1/tasks", None),
    ("GET", "/v1/tasks/t", None),
    ("POST", "/v1/tasks/t/events", {"type": "log", "data": {"level": "info", "message": "m"}}),
    ("GET", "/v1/tasks/t/events", None),
    ("POST", "/v1/events/batch", {"events": [{"task_id": "t", "type": "started", "data": {}}]}),
    ("GET", "/v1/events", None),
]
ENDPOINT_IDS = [f"{method} {path}" for method, path, _ in ENDPOINTS]

# Which scope each endpoint needs.
NEEDS = {
    "POST /v1/tasks": "tasks:write",
    "GET /v1/tasks": "tasks:read",
    "GET /v1/tasks/t": "tasks:read",
    "POST /v1/tasks/t/events": "tasks:write",
    "GET /v1/tasks/t/events": "tasks:read",
    "POST /v1/events/batch": "tasks:write",
    "GET /v1/events": "events:read",
}


def b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "alice", "tenant": "t1", "scope": "tasks:read tasks:write events:read",
            "iat": now, "exp": now + 3600}  # fmt: skip
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def bad_tokens(secret: str) -> dict[str, str]:
    now = int(time.time())
    signed = jwt.encode(claims(), secret, algorithm="HS256")
    header, payload, _signature = signed.split(".")
    return {
        "garbage": "not-a-jwt",
        "two parts": f"{header}.{payload}",
        "bad signature": jwt.encode(claims(), secret + "x", algorithm="HS256"),
        "tampered payload": f"{header}.{b64(claims(tenant='t2'))}.{_signature}",
        "expired": jwt.encode(claims(exp=now - 3600), secret, algorithm="HS256"),
        "alg none": jwt.encode(claims(), None, algorithm="none"),
        "alg none with signature": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.{_signature}",
        "no sub": jwt.encode(claims(sub=None), secret, algorithm="HS256"),
        "no tenant": jwt.encode(claims(tenant=None), secret, algorithm="HS256"),
        "no exp": jwt.encode(claims(exp=None), secret, algorithm="HS256"),
        "exp not a number": jwt.encode(claims(exp="tomorrow"), secret, algorithm="HS256"),
        "not yet valid": jwt.encode(claims(nbf=now + 3600), secret, algorithm="HS256"),
        "tenant not a string": jwt.encode(claims(tenant=5), secret, algorithm="HS256"),
        "sub not a string": jwt.encode(claims(sub=["alice"]), secret, algorithm="HS256"),
    }


async def call(
    service: Service, method: str, path: str, body: Any, headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Any:  # fmt: skip
    return await service.client.request(method, path, json=body, headers=headers or {}, **kwargs)


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
async def test_no_token_is_401(service: Service, method: str, path: str, body: Any) -> None:
    assert_problem(await call(service, method, path, body), 401, "unauthorized")


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
async def test_bad_tokens_are_401(service: Service, method: str, path: str, body: Any) -> None:
    failures = []
    for name, token in bad_tokens(service.secret).items():
        response = await call(service, method, path, body, {"Authorization": f"Bearer {token}"})
        if response.status_code != 401 or response.json().get("code") != "unauthorized":
            failures.append(f"{name}: {response.status_code} {response.text[:200]}")
        else:
            assert_problem(response, 401, "unauthorized")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic YWxpY2U6cHc=",
        "Token {token}",
        "{token}",
        "Bearer",
        "Bearer {token}x",
        "bearer-{token}",
    ],
)
async def test_wrong_scheme_is_401(service: Service, authorization: str) -> None:
    header = authorization.format(token=service.token())
    response = await service.client.get("/v1/tasks", headers={"Authorization": header})
    assert_problem(response, 401, "unauthorized")


async def test_lowercase_bearer_scheme_is_accepted(service: Service) -> None:
    response = await service.client.get(
        "/v1/tasks", headers={"Authorization": f"bearer {service.token()}"}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
async def test_access_token_query_is_ignored_outside_streams(
    service: Service, method: str, path: str, body: Any
) -> None:
    response = await call(service, method, path, body, params={"access_token": service.token()})
    assert_problem(response, 401, "unauthorized")


async def test_valid_token_is_accepted_everywhere(service: Service) -> None:
    await service.api.create_task(id="t")
    for method, path, body in ENDPOINTS:
        response = await call(service, method, path, body, service.auth())
        assert response.status_code in (200, 201), f"{method} {path}: {response.text}"


async def test_token_within_leeway_after_expiry_is_accepted(service: Service) -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 5), service.secret, algorithm="HS256")
    response = await service.client.get("/v1/tasks", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "scopes",
    ["tasks:write", "tasks:read", "events:read", "", None, "tasks:readwrite", "TASKS:READ"],
)
async def test_scopes_are_independent(service: Service, scopes: str | None) -> None:
    await service.api.create_task(id="t")
    granted = set((scopes or "").split())
    token = jwt.encode(claims(scope=scopes), service.secret, algorithm="HS256")
    mismatches = []
    for method, path, body in ENDPOINTS:
        name = f"{method} {path}"
        response = await call(service, method, path, body, {"Authorization": f"Bearer {token}"})
        allowed = NEEDS[name] in granted
        if allowed and response.status_code not in (200, 201):
            mismatches.append(f"{name}: expected success, got {response.status_code}")
        if not allowed:
            if response.status_code != 403:
                mismatches.append(f"{name}: expected 403, got {response.status_code}")
            else:
                assert_problem(response, 403, "forbidden")
    assert not mismatches, "\n".join(mismatches)


async def test_scope_claim_as_a_list_grants_nothing_extra(service: Service) -> None:
    token = jwt.encode(claims(scope=None, scp=["tasks:read"]), service.secret, algorithm="HS256")
    response = await service.client.get("/v1/tasks", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 403, "forbidden")


async def test_invalid_token_without_scope_is_401_not_403(service: Service) -> None:
    token = jwt.encode(claims(scope=None), service.secret + "x", algorithm="HS256")
    response = await service.client.get("/v1/tasks", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "unauthorized")


# ----------------------------------------------------------------------------- tenants


async def test_another_tenants_task_is_404_on_every_task_endpoint(service: Service) -> None:
    owner, stranger = service.as_(tenant="t1"), service.as_(tenant="t2")
    await owner.create_task(id="secret")
    await owner.event("secret", "started")
    before = await owner.snapshot("secret")
    assert_problem(await stranger.get("/v1/tasks/secret"), 404, "task_not_found")
    assert_problem(await stranger.get("/v1/tasks/secret/events"), 404, "task_not_found")
    assert_problem(await stranger.append("secret", "log"), 404, "task_not_found")
    assert_problem(
        await stranger.append("secret", "log", expected_version=2), 404, "task_not_found"
    )
    assert_problem(await stranger.append("secret", "started"), 404, "task_not_found")
    results = assert_ok(
        await stranger.batch(
            [{"task_id": "secret", "type": "log", "data": {"level": "info", "message": "m"}}]
        )
    )["results"]
    assert results[0]["status"] == 404
    assert results[0]["error"]["code"] == "task_not_found"
    # the same answers as for a task that does not exist at all
    nowhere = await stranger.get("/v1/tasks/nowhere")
    somewhere = await stranger.get("/v1/tasks/secret")
    assert (nowhere.status_code, nowhere.json()["code"]) == (
        somewhere.status_code,
        somewhere.json()["code"],
    )
    assert await owner.snapshot("secret") == before


async def test_listings_never_show_another_tenant(service: Service) -> None:
    one, two = service.as_(tenant="t1"), service.as_(tenant="t2")
    await one.create_task(id="mine", kind="k")
    await one.event("mine", "started")
    await two.create_task(id="theirs", kind="k")
    assert [task["id"] for task in (await two.list_tasks())["items"]] == ["theirs"]
    assert [task["id"] for task in (await two.list_tasks(kind="k"))["items"]] == ["theirs"]
    assert (await two.list_tasks(status="running"))["items"] == []
    events = await two.all_events()
    assert [(e["tenant"], e["task_id"]) for e in events] == [("t2", "theirs")]
    assert await two.all_events(task_id="mine") == []
    assert await two.all_events(kind="k") == events
    assert {e["tenant"] for e in await one.all_events()} == {"t1"}


async def test_same_task_id_in_two_tenants_never_mixes(service: Service) -> None:
    one, two = service.as_(tenant="t1"), service.as_(tenant="t2")
    first = await one.create_task(id="build-1", kind="a", title="one")
    second = await two.create_task(id="build-1", kind="b", title="two")
    assert (first["tenant"], second["tenant"]) == ("t1", "t2")
    await one.event("build-1", "started")
    await one.event("build-1", "progress", {"percent": 70})
    await two.event("build-1", "cancelled")
    task_one, task_two = await one.task("build-1"), await two.task("build-1")
    assert (task_one["status"], task_one["percent"], task_one["title"]) == ("running", 70, "one")
    assert (task_two["status"], task_two["percent"], task_two["title"]) == (
        "cancelled",
        None,
        "two",
    )
    assert [e["type"] for e in await one.history("build-1")] == ["created", "started", "progress"]
    assert [e["type"] for e in await two.history("build-1")] == ["created", "cancelled"]
    assert {e["tenant"] for e in await one.history("build-1")} == {"t1"}
    assert {e["tenant"] for e in await two.all_events(task_id="build-1")} == {"t2"}
    # each tenant's task keeps its own status and version
    assert_problem(await two.append("build-1", "log"), 409, "invalid_transition")
    assert_created(await one.append("build-1", "log", expected_version=3))


async def test_subject_does_not_matter_within_a_tenant(service: Service) -> None:
    alice, bob = service.as_(sub="alice"), service.as_(sub="bob")
    await alice.create_task(id="team")
    assert (await bob.task("team"))["id"] == "team"
    await bob.event("team", "started")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/schema", "/schema/openapi.json"])
async def test_open_endpoints_need_no_token(service: Service, path: str) -> None:
    response = await service.client.get(path)
    assert response.status_code == 200, response.text
