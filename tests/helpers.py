"""Shared test vocabulary: the running service, typed shortcuts for its API, contract checks."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.settings import Settings
from service.tokens import mint

ALL_SCOPES = "tasks:read tasks:write events:read"
STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")
EVENT_TYPES = (
    "started",
    "progress",
    "log",
    "succeeded",
    "failed",
    "cancelled",
    "cancel_requested",
)

TASK_FIELDS = {
    "id",
    "tenant",
    "kind",
    "title",
    "status",
    "percent",
    "done",
    "total",
    "message",
    "stage",
    "result",
    "error",
    "metadata",
    "version",
    "last_seq",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "cancel_requested",
    "lease_seconds",
    "elapsed_seconds",
    "eta_seconds",
}
# Task fields that move with the clock: two reads of an unchanged task may differ in them.
CLOCK_FIELDS = ("elapsed_seconds", "eta_seconds")
EVENT_FIELDS = {"seq", "task_id", "tenant", "version", "type", "data", "time"}
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}
CSV_HEADER = "seq,task_id,tenant,version,type,data,time"

TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

# Valid data for every appendable event type.
VALID_DATA: dict[str, dict[str, Any]] = {
    "started": {"worker": "w-1"},
    "progress": {"percent": 10},
    "log": {"level": "info", "message": "hello"},
    "succeeded": {"result": {"ok": True}},
    "failed": {"error": {"message": "boom"}},
    "cancelled": {"reason": "no longer needed"},
    "cancel_requested": {"reason": "the user asked"},
}

# The transition table: event type -> {status before: status after}; absent means 409.
TRANSITIONS: dict[str, dict[str, str]] = {
    "started": {"pending": "running"},
    "progress": {"pending": "running", "running": "running"},
    "log": {"pending": "pending", "running": "running"},
    "succeeded": {"pending": "succeeded", "running": "succeeded"},
    "failed": {"pending": "failed", "running": "failed"},
    "cancelled": {"pending": "cancelled", "running": "cancelled"},
    "cancel_requested": {"pending": "pending", "running": "running"},
}

# Events that bring a fresh (pending) task to each status.
PATH_TO_STATUS: dict[str, list[str]] = {
    "pending": [],
    "running": ["started"],
    "succeeded": ["started", "succeeded"],
    "failed": ["started", "failed"],
    "cancelled": ["cancelled"],
}


def with_database(server_url: str, name: str) -> str:
    """The same server URL pointing at another database (query such as ``?host=`` kept)."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + name))


def semantic(value: Any) -> Any:
    """JSON as a decimal-exact value: ``1e300`` and ``1000...0`` are the same number, as the
    contract's "number spelling may change" allows; Python's float/int split would not say so."""
    text = value if isinstance(value, str | bytes) else json.dumps(value)
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------- contract checks


def assert_time(value: Any) -> None:
    assert isinstance(value, str) and TIME_RE.match(value), f"bad time format: {value!r}"


def assert_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with all five members and the given status/code."""
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: expected {status}, "
        f"got {response.status_code}: {response.text[:500]}"
    )
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("application/problem+json"), content_type
    body = response.json()
    assert_problem_body(body, status, code)
    return body


def assert_problem_body(body: Any, status: int, code: str | None = None) -> None:
    assert isinstance(body, dict), body
    missing = PROBLEM_FIELDS - body.keys()
    assert not missing, f"problem lacks {missing}: {body}"
    assert body["status"] == status, body
    assert isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["detail"], str), body
    assert isinstance(body["type"], str) and body["type"], body
    if code is not None:
        assert body["code"] == code, body
    if body["code"] == "validation_error" and status == 422:
        assert_field_errors(body)


def assert_field_errors(body: dict[str, Any], *fields: str) -> None:
    """A 422 names its offending fields; each of ``fields`` appears in some error's field."""
    errors = body.get("errors")
    assert isinstance(errors, list) and errors, f"validation error without errors: {body}"
    for error in errors:
        assert isinstance(error, dict) and {"field", "message"} <= error.keys(), error
        assert isinstance(error["field"], str) and isinstance(error["message"], str), error
    for name in fields:
        assert any(name in error["field"] for error in errors), f"no error names {name}: {body}"


def assert_task(task: Any) -> None:
    assert isinstance(task, dict), task
    missing = TASK_FIELDS - task.keys()
    assert not missing, f"task lacks {missing}: {task}"
    assert task["status"] in STATUSES, task
    assert isinstance(task["version"], int) and task["version"] >= 1, task
    assert isinstance(task["last_seq"], int) and task["last_seq"] >= 1, task
    for name in ("created_at", "updated_at"):
        assert_time(task[name])
    for name in ("started_at", "finished_at"):
        if task[name] is not None:
            assert_time(task[name])


def assert_event(event: Any) -> None:
    assert isinstance(event, dict), event
    missing = EVENT_FIELDS - event.keys()
    assert not missing, f"event lacks {missing}: {event}"
    assert isinstance(event["seq"], int) and event["seq"] >= 1, event
    assert isinstance(event["version"], int) and event["version"] >= 1, event
    assert isinstance(event["data"], dict), event
    assert_time(event["time"])


def assert_created(response: httpx.Response) -> Any:
    assert response.status_code == 201, (
        f"{response.request.method} {response.request.url}: expected 201, "
        f"got {response.status_code}: {response.text[:500]}"
    )
    assert response.headers.get("location"), "a 201 carries Location"
    return response.json()


def assert_ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: expected {status}, "
        f"got {response.status_code}: {response.text[:500]}"
    )
    assert response.headers.get("content-type", "").startswith("application/json"), (
        response.headers.get("content-type")
    )
    return response.json()


def without(task: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in task.items() if key not in names}


def settled(task: dict[str, Any]) -> dict[str, Any]:
    """The task without the fields that move with the clock."""
    return without(task, *CLOCK_FIELDS)


# --------------------------------------------------------------------------- the API


class Api:
    """The HTTP API as one principal (a token) sees it."""

    def __init__(self, client: httpx.AsyncClient, token: str | None) -> None:
        self.client = client
        self.token = token

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        merged = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        merged.update(headers or {})
        return merged

    async def request(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.client.request(method, url, headers=self._headers(headers), **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def post_raw(
        self, url: str, body: bytes | str, *, content_type: str = "application/json", **kwargs: Any
    ) -> httpx.Response:
        headers = {"Content-Type": content_type, **kwargs.pop("headers", {})}
        content = body.encode() if isinstance(body, str) else body
        return await self.request("POST", url, content=content, headers=headers, **kwargs)

    # ---- tasks

    async def create_task_response(
        self, *, idempotency_key: str | None = None, **body: Any
    ) -> httpx.Response:
        body.setdefault("kind", "build")
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        return await self.post("/v1/tasks", json=body, headers=headers)

    async def create_task(self, **body: Any) -> dict[str, Any]:
        task = assert_created(await self.create_task_response(**body))
        assert_task(task)
        return task

    async def task(self, task_id: str) -> dict[str, Any]:
        task = assert_ok(await self.get(f"/v1/tasks/{task_id}"))
        assert_task(task)
        return task

    async def list_tasks(self, **params: Any) -> dict[str, Any]:
        return assert_ok(await self.get("/v1/tasks", params=params))

    async def all_tasks(self, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await self.list_tasks(**params, **({"cursor": cursor} if cursor else {}))
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    # ---- events

    async def append(
        self,
        task_id: str,
        type: str,
        data: Any = None,
        *,
        expected_version: Any = None,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "type": type,
            "data": VALID_DATA.get(type, {}) if data is None else data,
        }
        if expected_version is not None:
            body["expected_version"] = expected_version
        body.update(extra)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        return await self.post(f"/v1/tasks/{task_id}/events", json=body, headers=headers)

    async def event(
        self, task_id: str, type: str, data: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        event = assert_created(await self.append(task_id, type, data, **kwargs))
        assert_event(event)
        return event

    async def bring_to(self, task_id: str, status: str) -> None:
        for type in PATH_TO_STATUS[status]:
            await self.event(task_id, type)

    async def batch(self, items: list[dict[str, Any]]) -> httpx.Response:
        return await self.post("/v1/events/batch", json={"events": items})

    async def history_page(self, task_id: str, **params: Any) -> dict[str, Any]:
        return assert_ok(await self.get(f"/v1/tasks/{task_id}/events", params=params))

    async def history(self, task_id: str, **params: Any) -> list[dict[str, Any]]:
        return await self._all_pages(f"/v1/tasks/{task_id}/events", params)

    async def events_page(self, **params: Any) -> dict[str, Any]:
        return assert_ok(await self.get("/v1/events", params=params))

    async def all_events(self, **params: Any) -> list[dict[str, Any]]:
        return await self._all_pages("/v1/events", params)

    async def _all_pages(self, url: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params = dict(params)
        while True:
            page = assert_ok(await self.get(url, params=params))
            items.extend(page["items"])
            if page["next_after"] is None:
                return items
            params["after"] = page["next_after"]

    async def snapshot(self, task_id: str) -> tuple[dict[str, Any], int]:
        """The task and the tenant's event count: what a refused request must not change."""
        task = settled(await self.task(task_id))
        return task, len(await self.all_events())


@dataclass
class Service:
    """A running service: real HTTP on an ephemeral port, its own database and secret."""

    base_url: str
    secret: str
    database_url: str
    settings: Settings
    client: httpx.AsyncClient
    _apis: dict[tuple[str, str, str], Api] = field(default_factory=dict)

    def token(
        self,
        tenant: str = "t1",
        scopes: str = ALL_SCOPES,
        sub: str = "alice",
        ttl_seconds: int = 3600,
    ) -> str:
        return mint(self.secret, sub=sub, tenant=tenant, scopes=scopes, ttl_seconds=ttl_seconds)

    def auth(self, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(**kwargs)}"}

    def as_(self, tenant: str = "t1", scopes: str = ALL_SCOPES, sub: str = "alice") -> Api:
        key = (tenant, scopes, sub)
        if key not in self._apis:
            self._apis[key] = Api(self.client, self.token(tenant=tenant, scopes=scopes, sub=sub))
        return self._apis[key]

    @property
    def api(self) -> Api:
        """Tenant ``t1`` with every scope."""
        return self.as_()

    @property
    def anonymous(self) -> Api:
        return Api(self.client, None)


# --------------------------------------------------------------------------- metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
