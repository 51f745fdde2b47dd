"""The authorisation matrix: every /v1 endpoint against every way a caller may be refused.

The endpoints are read from the application's own routes, so a new route fails
``test_every_route_is_in_the_matrix`` until it is given a row here: its scopes, a request
that a rightful caller would have answered, and what another tenant sees through it.

For each endpoint: no token, a token that is not one, a bad signature, expiry, ``alg: none``
and unaccepted algorithms, each required claim missing → 401 ``unauthorized``; every known
scope but the ones the endpoint needs → 403 ``forbidden``; another tenant's task → exactly
what a task that does not exist gets, and no listing, export or stream shows it. Never a 5xx,
never the token echoed, and a refused request changes nothing.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from litestar.routes import HTTPRoute

from service.app import create_app
from service.settings import Settings
from tests.helpers import Api, Service, assert_ok, assert_problem, settled
from tests.sse import SseClient

READ, WRITE, EVENTS_READ, CANCEL = "tasks:read", "tasks:write", "events:read", "tasks:cancel"
KNOWN_SCOPES = frozenset({READ, WRITE, EVENTS_READ, CANCEL})
OWNER, STRANGER = "tenant-owner", "tenant-stranger"
TASK = "secret-task"
"""The owner's task, the one every request names."""
SECRET_TITLE = "the owner's confidential title"
LOG = {"type": "log", "data": {"level": "info", "message": "from the matrix"}}

OPEN_ROUTES = {
    "/",
    "/static/{name:str}",
    "/healthz",
    "/readyz",
    "/metrics",
    "/schema",
    "/schema/openapi.json",
}
"""Routes outside /v1, open by the contract (the dashboard page and its static files among
them); ``/schema/{path}`` serves the same document."""


@dataclass(frozen=True)
class Endpoint:
    """One row of the matrix: what the endpoint needs and a request it would grant."""

    scopes: frozenset[str]
    """Any one of them grants the request."""
    body: Any = None
    accepts: tuple[str, ...] = ("application/json",)
    """Each ``Accept`` the endpoint serves is a separate way in."""
    stream: bool = False
    """A Server-Sent Events endpoint: ``?access_token=`` is honoured, a 200 stays open."""
    params: dict[str, str] = field(default_factory=dict)


MATRIX: dict[tuple[str, str], Endpoint] = {
    ("POST", "/v1/tasks"): Endpoint(frozenset({WRITE}), body={"kind": "k"}),
    ("GET", "/v1/tasks"): Endpoint(frozenset({READ})),
    ("GET", "/v1/tasks/{task_id:str}"): Endpoint(frozenset({READ})),
    ("POST", "/v1/tasks/{task_id:str}/events"): Endpoint(frozenset({WRITE}), body=LOG),
    ("GET", "/v1/tasks/{task_id:str}/events"): Endpoint(frozenset({READ})),
    ("POST", "/v1/tasks/{task_id:str}/cancel"): Endpoint(
        frozenset({WRITE, CANCEL}), body={"reason": "from the matrix"}
    ),
    ("POST", "/v1/events/batch"): Endpoint(
        frozenset({WRITE}), body={"events": [{"task_id": TASK, **LOG}]}
    ),
    ("GET", "/v1/events"): Endpoint(
        frozenset({EVENTS_READ}),
        accepts=("application/json", "application/x-ndjson", "text/csv"),
        params={"task_id": TASK},
    ),
    ("GET", "/v1/tasks/{task_id:str}/stream"): Endpoint(frozenset({READ}), stream=True),
    ("GET", "/v1/stream"): Endpoint(frozenset({READ}), stream=True, params={"task_id": TASK}),
}
IDS = [f"{method} {route}" for method, route in MATRIX]


def url(route: str, task_id: str = TASK) -> str:
    return route.replace("{task_id:str}", task_id)


def application_routes() -> dict[str, set[str]]:
    """Path → methods of the application as built (it opens nothing until it starts)."""
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:1/none", jwt_secret="x" * 32)
    routes: dict[str, set[str]] = {}
    for route in create_app(settings).routes:
        if isinstance(route, HTTPRoute):
            routes[route.path] = set(route.methods) - {"OPTIONS", "HEAD"}
    return routes


def test_every_route_is_in_the_matrix() -> None:
    routes = application_routes()
    served = {
        (method, path)
        for path, methods in routes.items()
        if path.startswith("/v1")
        for method in methods
    }
    assert served - MATRIX.keys() == set(), "a /v1 route without a row in the auth matrix"
    assert MATRIX.keys() - served == set(), "a row of the matrix for a route that is gone"
    assert ISOLATION.keys() == MATRIX.keys(), "every endpoint needs its tenant-isolation check"
    outside = {path for path in routes if not path.startswith("/v1")} - {"/schema/{path:str}"}
    assert outside <= OPEN_ROUTES, f"outside /v1 and not open by the contract: {outside}"


# ------------------------------------------------------------------------------ tokens


def b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "mallory", "tenant": OWNER, "scope": " ".join(sorted(KNOWN_SCOPES)),
            "iat": now, "exp": now + 3600}  # fmt: skip
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def refused_tokens(secret: str) -> dict[str, str | None]:
    """Case → token (None: no Authorization at all); each must be answered 401."""
    signed = jwt.encode(claims(), secret, algorithm="HS256")
    header, payload, signature = signed.split(".")
    return {
        "no token": None,
        "garbage": "garbage",
        "three garbage parts": "abc.def.ghi",
        "bad signature": jwt.encode(claims(), secret + "x", algorithm="HS256"),
        "tampered claims": f"{header}.{b64(claims(tenant=STRANGER))}.{signature}",
        "expired": jwt.encode(claims(exp=int(time.time()) - 3600), secret, algorithm="HS256"),
        "alg none": jwt.encode(claims(), None, algorithm="none"),
        "alg NONE, signature kept": f"{b64({'alg': 'NONE', 'typ': 'JWT'})}.{payload}.{signature}",
        "alg HS512 (not configured)": jwt.encode(claims(), secret * 2, algorithm="HS512"),
        "alg not a string": f"{b64({'alg': ['HS256'], 'typ': 'JWT'})}.{payload}.{signature}",
        "missing sub": jwt.encode(claims(sub=None), secret, algorithm="HS256"),
        "missing tenant": jwt.encode(claims(tenant=None), secret, algorithm="HS256"),
        "missing exp": jwt.encode(claims(exp=None), secret, algorithm="HS256"),
    }


async def call(
    service: Service,
    method: str,
    route: str,
    endpoint: Endpoint,
    *,
    token: str | None,
    in_query: bool = False,
    accept: str = "application/json",
    task_id: str = TASK,
) -> httpx.Response:
    """One request; a stream that is granted is closed at once, after its head."""
    headers = {"Accept": accept}
    params = dict(endpoint.params)
    if token is not None and in_query:
        params["access_token"] = token
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = service.client.build_request(
        method, url(route, task_id), headers=headers, params=params, json=endpoint.body
    )
    response = await service.client.send(request, stream=True)
    try:
        if response.status_code != 200 or not endpoint.stream:
            await response.aread()
    finally:
        await response.aclose()
    return response


def refusal_problem(response: httpx.Response, status: int, code: str, token: str | None) -> str:
    """'' when the response is the expected problem and echoes no token, else why not."""
    where = f"{response.status_code} {response.text[:200]}"
    if response.status_code >= 500:
        return f"a 5xx: {where}"
    if token and token in response.text:
        return f"the token is echoed: {where}"
    try:
        assert_problem(response, status, code)
    except AssertionError as error:
        return str(error).splitlines()[0]
    if status == 401 and response.headers.get("www-authenticate") != "Bearer":
        return f"401 without 'WWW-Authenticate: Bearer': {where}"
    return ""


async def owner_with_task(service: Service) -> Api:
    owner = service.as_(tenant=OWNER)
    await owner.create_task(id=TASK, kind="k", title=SECRET_TITLE)
    await owner.event(TASK, "started")
    return owner


@pytest.mark.parametrize(("method", "route"), list(MATRIX), ids=IDS)
async def test_refusals(service: Service, method: str, route: str) -> None:
    endpoint = MATRIX[(method, route)]
    owner = await owner_with_task(service)

    # The rightful caller is answered, so every refusal below is the token's doing.
    for accept in endpoint.accepts:
        granted = await call(service, method, route, endpoint, token=owner.token, accept=accept)
        assert granted.status_code in (200, 201), f"{accept}: {granted.text[:300]}"
    before = await owner.snapshot(TASK)

    failures: list[str] = []
    ways = [False, True] if endpoint.stream else [False]
    for case, token in refused_tokens(service.secret).items():
        for in_query in ways:
            for accept in endpoint.accepts:
                response = await call(
                    service, method, route, endpoint, token=token, in_query=in_query, accept=accept
                )
                if why := refusal_problem(response, 401, "unauthorized", token):
                    failures.append(f"{case} (query={in_query}, {accept}): {why}")

    if not endpoint.stream:
        # ?access_token= is for the streams only: elsewhere a good token there is no token.
        response = await call(service, method, route, endpoint, token=owner.token, in_query=True)
        if why := refusal_problem(response, 401, "unauthorized", owner.token):
            failures.append(f"valid token in the query of a non-stream endpoint: {why}")

    others = " ".join(sorted(KNOWN_SCOPES - endpoint.scopes))
    wrong = service.token(tenant=OWNER, scopes=others, sub="mallory")
    for in_query in ways:
        for accept in endpoint.accepts:
            response = await call(
                service, method, route, endpoint, token=wrong, in_query=in_query, accept=accept
            )
            if why := refusal_problem(response, 403, "forbidden", wrong):
                failures.append(f"scopes {others!r} (query={in_query}, {accept}): {why}")

    assert not failures, "\n".join(failures)
    assert await owner.snapshot(TASK) == before, "a refused request changed something"


# ------------------------------------------------------------------------------ tenants


def shows_nothing_of_the_owner(text: str) -> str:
    return "" if OWNER not in text and SECRET_TITLE not in text else f"owner's data: {text[:300]}"


async def same_as_missing(service: Service, method: str, route: str) -> None:
    """Another tenant's task is answered exactly as a task that does not exist."""
    endpoint = MATRIX[(method, route)]
    stranger = service.as_(tenant=STRANGER)
    theirs = await call(service, method, route, endpoint, token=stranger.token)
    missing = await call(service, method, route, endpoint, token=stranger.token, task_id="nowhere")
    assert_problem(theirs, 404, "task_not_found")
    assert_problem(missing, 404, "task_not_found")
    assert theirs.json() == {
        **missing.json(),
        "detail": missing.json()["detail"].replace("nowhere", TASK),
    }
    assert not shows_nothing_of_the_owner(theirs.text)


async def create_same_id(service: Service, method: str, route: str) -> None:
    """Task ids are per tenant: the stranger's task of the same id is its own."""
    stranger = service.as_(tenant=STRANGER)
    task = await stranger.create_task(id=TASK, kind="other")
    assert (task["tenant"], task["title"], task["version"]) == (STRANGER, None, 1)


async def list_tasks(service: Service, method: str, route: str) -> None:
    stranger = service.as_(tenant=STRANGER)
    await stranger.create_task(id="own", kind="k")
    for params in ({}, {"kind": "k"}, {"status": "running"}):
        page = await stranger.list_tasks(**params)
        assert [task["id"] for task in page["items"]] in (["own"], []), page
        assert not shows_nothing_of_the_owner(json.dumps(page))


async def batch(service: Service, method: str, route: str) -> None:
    stranger = service.as_(tenant=STRANGER)
    nowhere = {"task_id": "nowhere", **LOG}
    results = assert_ok(await stranger.batch([{"task_id": TASK, **LOG}, nowhere]))["results"]
    assert [item["status"] for item in results] == [404, 404], results
    assert results[0]["error"] == {
        **results[1]["error"],
        "detail": results[1]["error"]["detail"].replace("nowhere", TASK),
    }


async def events(service: Service, method: str, route: str) -> None:
    stranger = service.as_(tenant=STRANGER)
    await stranger.create_task(id="own", kind="k")
    for params in ({}, {"task_id": TASK}, {"kind": "k"}, {"after": 0}):
        page = await stranger.events_page(**params)
        assert {event["tenant"] for event in page["items"]} <= {STRANGER}, page
        for accept in ("application/x-ndjson", "text/csv"):
            export = await stranger.get("/v1/events", params=params, headers={"Accept": accept})
            assert export.status_code == 200, export.text
            assert not shows_nothing_of_the_owner(export.text)


async def tenant_stream(service: Service, method: str, route: str) -> None:
    """From the beginning of history, unfiltered or filtered on an id both tenants use: only
    the stranger's own events arrive, backfilled or live, and they do arrive."""
    owner, stranger = service.as_(tenant=OWNER), service.as_(tenant=STRANGER)
    await owner.create_task(id="both", kind="k")
    await stranger.create_task(id="both", kind="k")
    for params in ([], [("task_id", "both")]):
        async with await SseClient.open(
            service.base_url, "/v1/stream", token=stranger.token, params=params, last_event_id=0
        ) as client:
            assert client.status == 200
            await owner.event("both", "log")
            own = await stranger.event("both", "log")
            frames = await client.events_through(own["seq"])
            assert frames[-1].json()["seq"] == own["seq"], "the stranger's own event never came"
            for frame in frames:
                assert frame.json()["tenant"] == STRANGER, frame.data


async def task_stream(service: Service, method: str, route: str) -> None:
    await same_as_missing(service, method, route)
    stranger = service.as_(tenant=STRANGER)
    async with await SseClient.open(
        service.base_url, url(route), token=stranger.token, token_in_query=True
    ) as client:
        body = await client.json()
        assert (client.status, body["code"]) == (404, "task_not_found"), body


Isolation = Callable[[Service, str, str], Awaitable[None]]
ISOLATION: dict[tuple[str, str], Isolation] = {
    ("POST", "/v1/tasks"): create_same_id,
    ("GET", "/v1/tasks"): list_tasks,
    ("GET", "/v1/tasks/{task_id:str}"): same_as_missing,
    ("POST", "/v1/tasks/{task_id:str}/events"): same_as_missing,
    ("GET", "/v1/tasks/{task_id:str}/events"): same_as_missing,
    ("POST", "/v1/tasks/{task_id:str}/cancel"): same_as_missing,
    ("POST", "/v1/events/batch"): batch,
    ("GET", "/v1/events"): events,
    ("GET", "/v1/tasks/{task_id:str}/stream"): task_stream,
    ("GET", "/v1/stream"): tenant_stream,
}


@pytest.mark.parametrize(("method", "route"), list(ISOLATION), ids=IDS)
async def test_another_tenants_task(service: Service, method: str, route: str) -> None:
    owner = await owner_with_task(service)
    before = settled(await owner.task(TASK)), await owner.history(TASK)
    await ISOLATION[(method, route)](service, method, route)
    after = settled(await owner.task(TASK)), await owner.history(TASK)
    assert after == before, "another tenant's request changed the owner's task"
