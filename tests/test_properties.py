"""Property tests: random sequences of appends against a running service, over real HTTP.

Each example is a small program: a few tasks, then single appends, batches, retries of earlier
keyed requests and malformed requests, valid and invalid in every way the contract names (bad
types, bad data, data over the size limit, transitions that are not allowed, stale
``expected_version``, bad idempotency keys, malformed batch envelopes and items). Every example
runs in a tenant of its own, so the tenant's whole log is exactly what the example wrote.

After every request:
- the outcome is the one an independent model of the contract predicts (201, 200 replay, 404,
  409 with its code, 413, 422, 400);
- a refused request (or batch item) changed nothing: every task and the tenant's whole log are
  as they were before it;
- an idempotent retry answered 200 with the original event, byte for byte the same object;
- the log grew by exactly the acknowledged events, in order, with ``seq`` above everything before;
- every task equals the fold of its history by :func:`fold` below — written from the contract,
  deliberately not ``service.domain.state`` (that would test the code against itself);
- versions are 1..n without holes and ``seq`` strictly increases.

At the end of each example every task's history is also read page by page with a random page
size and must equal the tenant-wide log restricted to the task.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import (
    CLOCK_FIELDS,
    TASK_FIELDS,
    TERMINAL,
    TRANSITIONS,
    Api,
    Service,
    assert_problem,
    assert_problem_body,
    semantic,
    settled,
)

MAX_EVENT_BYTES = 1024  # the smallest the settings allow, so "too large" is cheap to generate
OPEN = ("pending", "running")
JSON_MEMBERS = ("result", "error", "metadata")
MODEL_FIELDS = sorted(TASK_FIELDS - set(CLOCK_FIELDS))
GHOST = -1  # a task id that matches the pattern but was never created
BAD_ID = -2  # a task id outside the pattern


# --------------------------------------------------------------------------- the fold


def fold(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The task the contract says a history describes ("Precise points (2)")."""
    first = events[0]
    assert first["type"] == "created" and first["version"] == 1, first
    data = first["data"]
    task: dict[str, Any] = {
        "id": first["task_id"],
        "tenant": first["tenant"],
        "kind": data["kind"],
        "title": data.get("title"),
        "status": "pending",
        "percent": None,
        "done": None,
        "total": None,
        "message": None,
        "stage": None,
        "result": None,
        "error": None,
        "metadata": data.get("metadata"),
        "version": 1,
        "last_seq": first["seq"],
        "created_at": first["time"],
        "updated_at": first["time"],
        "started_at": None,
        "finished_at": None,
        "cancel_requested": False,
        "lease_seconds": None,
    }
    for event in events[1:]:
        kind, data, time = event["type"], event["data"], event["time"]
        assert event["version"] == task["version"] + 1, f"version hole before {event}"
        assert event["seq"] > task["last_seq"], f"seq not increasing at {event}"
        assert task["status"] in OPEN, f"{kind} stored after the task finished: {event}"
        status = TRANSITIONS[kind].get(task["status"])
        assert status is not None, f"{kind} stored while {task['status']}: {event}"
        task.update(status=status, version=event["version"], last_seq=event["seq"])
        task["updated_at"] = time
        if status == "running" and task["started_at"] is None:
            task["started_at"] = time
        if status in TERMINAL:
            task["finished_at"] = time
        if kind == "progress":
            for name in ("done", "total", "message", "stage"):
                if data.get(name) is not None:
                    task[name] = data[name]
            if data.get("percent") is not None:
                task["percent"] = data["percent"]
            elif data.get("done") is not None and task["total"]:
                task["percent"] = min(100, data["done"] * 100 / task["total"])
        elif kind == "succeeded":
            task["percent"] = 100
            task["result"] = data.get("result")
        elif kind == "failed":
            task["error"] = data["error"]
        elif kind == "cancel_requested":
            task["cancel_requested"] = True
    return task


def comparable(event: dict[str, Any] | None) -> Any:
    """An event as the contract lets it vary between answers: ``data`` semantically."""
    if event is None:
        return None
    return {**event, "data": semantic(event["data"])}


def assert_task_is_fold(task: dict[str, Any], events: list[dict[str, Any]]) -> None:
    expected = fold(events)
    differences = []
    for name in MODEL_FIELDS:
        got, want = task.get(name, "<missing>"), expected[name]
        if name == "percent" and got is not None and want is not None:
            same = isinstance(got, int | float) and math.isclose(got, want, rel_tol=1e-12)
        elif name in JSON_MEMBERS:
            # Values, not JSON text: a result may be a JSON string such as "" (semantic() would
            # read a str as a document).
            same = semantic(json.dumps(got)) == semantic(json.dumps(want))
        else:
            same = got == want
        if not same:
            differences.append(f"{name}: task has {got!r}, the fold of its events gives {want!r}")
    assert not differences, "\n".join([f"task {task.get('id')}:", *differences])


# --------------------------------------------------------------------------- what is generated

_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=8
)
_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_json = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)
_extras = st.dictionaries(_text.map(lambda name: "x_" + name), _json, max_size=2)


def _with(base: st.SearchStrategy[dict[str, Any]], extras: Any = _extras) -> Any:
    return st.tuples(base, extras).map(lambda pair: {**pair[1], **pair[0]})


_optional_text = _text | st.none()
_percent = st.integers(0, 100) | st.floats(0, 100)
_done = st.integers(0, 1000) | st.integers(0, 2**63 - 1)
_total = st.integers(1, 1000) | st.integers(1, 2**63 - 1)
_progress_rest = {"total": _total, "message": _optional_text, "stage": _optional_text}

VALID_DATA: dict[str, st.SearchStrategy[Any]] = {
    "started": _with(st.fixed_dictionaries({}, optional={"worker": _optional_text})),
    "progress": _with(
        st.fixed_dictionaries({"percent": _percent}, optional={"done": _done, **_progress_rest})
        | st.fixed_dictionaries(
            {"done": _done}, optional={"percent": _percent | st.none(), **_progress_rest}
        )
    ),
    "log": _with(
        st.fixed_dictionaries(
            {"level": st.sampled_from(["debug", "info", "warning", "error"]), "message": _text}
        )
    ),
    "succeeded": _with(st.fixed_dictionaries({}, optional={"result": _json})),
    "failed": _with(
        st.fixed_dictionaries(
            {
                "error": _with(
                    st.fixed_dictionaries({"message": _text}, optional={"code": _optional_text}),
                )
            }
        )
    ),
    "cancelled": _with(st.fixed_dictionaries({}, optional={"reason": _optional_text})),
}

# Data each type must refuse with 422, whatever the task's state.
INVALID_DATA: dict[str, list[Any]] = {
    "started": [{"worker": 5}, {"worker": ["w"]}],
    "progress": [
        {},
        {"message": "no percent, no done"},
        {"percent": -1},
        {"percent": 100.5},
        {"percent": "50"},
        {"percent": True},
        {"done": -1},
        {"done": 2**63},
        {"done": 1, "total": 0},
        {"percent": 1, "message": 5},
    ],
    "log": [
        {"message": "no level"},
        {"level": "fatal", "message": "m"},
        {"level": "info"},
        {"level": "info", "message": 1},
    ],
    "succeeded": [{"result": "a\x00b"}, {"x_\x00": 1}],
    "failed": [{}, {"error": "boom"}, {"error": {"code": "x"}}, {"error": {"message": 5}}],
    "cancelled": [{"reason": []}, {"reason": 1}],
}
NOT_AN_OBJECT: list[Any] = [[], "x", 5, None]
UNKNOWN_TYPES = ["bogus", "Started", "", "CREATED"]


@dataclass(frozen=True)
class Spec:
    """One event as sent: type, data and any defect of the request around it."""

    type: str
    data: Any
    verdict: str  # "ok", "422", "413", "either" (422 or accepted: stored intact), "created"


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    kinds = ["ok"] * 6 + ["invalid_data", "not_object", "unknown_type", "too_large", "either"]
    kind = draw(st.sampled_from([*kinds, "created"]))
    event_type = draw(st.sampled_from(sorted(VALID_DATA)))
    if kind == "ok":
        return Spec(event_type, draw(VALID_DATA[event_type]), "ok")
    if kind == "invalid_data":
        return Spec(event_type, draw(st.sampled_from(INVALID_DATA[event_type])), "422")
    if kind == "not_object":
        return Spec(event_type, draw(st.sampled_from(NOT_AN_OBJECT)), "422")
    if kind == "unknown_type":
        return Spec(draw(st.sampled_from(UNKNOWN_TYPES)), draw(VALID_DATA[event_type]), "422")
    if kind == "too_large":
        data = {**draw(VALID_DATA[event_type]), "x_pad": "p" * MAX_EVENT_BYTES}
        return Spec(event_type, data, "413")
    if kind == "either":  # an integer beyond 64 bits in a free member: refused or kept intact
        return Spec(event_type, {**draw(VALID_DATA[event_type]), "x_big": 2**70 + 1}, "either")
    return Spec("created", {"kind": "again"}, "created")


@dataclass(frozen=True)
class Command:
    """One append: to which task, what, with which expectation and key, and any defect."""

    task: int  # index into the example's tasks, or GHOST / BAD_ID
    spec: Spec
    expected: Any  # None, "current", "stale" or an invalid raw value
    key: str | None
    defect: str | None  # "extra_member", "bad_expected", "bad_key", "not_object", "no_task_id"


KEYS = ["k0", "k1", "k2"]
BAD_KEYS = ["has space", "x" * 256, ""]


@st.composite
def commands(draw: st.DrawFn, tasks: int, batch: bool) -> Command:
    task = draw(st.sampled_from([*range(tasks), *range(tasks), GHOST, BAD_ID]))
    spec = draw(specs())
    expected = draw(st.sampled_from([None, None, "current", "stale"]))
    key = draw(st.sampled_from([None, *KEYS]))
    defects: list[str | None] = [None] * 8 + ["extra_member", "bad_expected", "bad_key"]
    if batch:
        defects += ["not_object", "no_task_id"]
    defect = draw(st.sampled_from(defects)) if spec.verdict in ("ok", "created") else None
    if defect == "bad_expected":
        bad_expected: list[Any] = [-1, "1", True, 1.5, 2**63]
        expected = draw(st.sampled_from(bad_expected))
    if defect == "bad_key":
        key = draw(st.sampled_from(BAD_KEYS))
    return Command(task, spec, expected, key, defect)


@dataclass(frozen=True)
class Single:
    command: Command | int  # an int replays the n-th earlier keyed command (mod their number)


@dataclass(frozen=True)
class BatchStep:
    items: list[Command | int]


@dataclass(frozen=True)
class BadBatch:
    body: bytes
    status: int


BAD_BATCHES = [
    BadBatch(b'{"events": "x"}', 422),
    BadBatch(b"{}", 422),
    BadBatch(b'{"events": [], "extra": 1}', 422),
    BadBatch(b'[{"task_id": "p0", "type": "log"}]', 422),
    BadBatch(b'{"events": [', 400),
]
Step = Single | BatchStep | BadBatch


@dataclass(frozen=True)
class Program:
    tasks: list[dict[str, Any]]  # bodies of POST /v1/tasks (without the id)
    steps: list[Step]


_creates = st.fixed_dictionaries(
    {"kind": st.sampled_from(["build", "deploy", "é-kind"])},
    optional={
        "title": _optional_text,
        "metadata": st.none() | st.dictionaries(_text, _json, max_size=3),
    },
)


@st.composite
def programs(draw: st.DrawFn) -> Program:
    tasks = draw(st.lists(_creates, min_size=1, max_size=3))
    retry = st.integers(0, 20)
    single_commands = commands(len(tasks), batch=False)
    batch_commands = commands(len(tasks), batch=True)
    # About one request in four retries an earlier keyed one.
    single = st.builds(Single, st.one_of(single_commands, single_commands, single_commands, retry))
    item = st.one_of(batch_commands, batch_commands, batch_commands, retry)
    batch = st.builds(BatchStep, st.lists(item, min_size=0, max_size=8))
    step = st.one_of(single, single, single, batch, batch, st.sampled_from(BAD_BATCHES))
    return Program(tasks, draw(st.lists(step, min_size=1, max_size=14)))


# --------------------------------------------------------------------------- the model


@dataclass
class ModelTask:
    status: str = "pending"
    version: int = 1
    keys: dict[str, tuple[str, Any, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class Outcome:
    """What the model allows: statuses and, for refusals, problem codes; for a replay, the
    original event."""

    statuses: set[int]
    codes: set[str] = field(default_factory=set)
    original: dict[str, Any] | None = None


class Run:
    """One example against the service: the model, the requests, the checks."""

    def __init__(self, service: Service, program: Program) -> None:
        self.tenant = f"prop-{uuid.uuid4().hex[:12]}"
        self.api = Api(service.client, service.token(tenant=self.tenant))
        self.program = program
        self.ids = [f"p{index}" for index in range(len(program.tasks))]
        self.model = [ModelTask() for _ in self.ids]
        self.keyed: list[Command] = []  # sent without defect and with a key: retry material
        self.state: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])

    # ---- reading the service

    async def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every task of the tenant and its whole log."""
        tasks = []
        for task_id in self.ids:
            response = await self.api.get(f"/v1/tasks/{task_id}")
            assert response.status_code == 200, response.text
            tasks.append(settled(response.json()))
        page = await self.api.get("/v1/events", params={"limit": 10000})
        assert page.status_code == 200, page.text
        assert page.json()["next_after"] is None
        return tasks, page.json()["items"]

    def check_state(self) -> None:
        tasks, events = self.state
        seqs = [event["seq"] for event in events]
        assert seqs == sorted(set(seqs)), f"seq not strictly increasing: {seqs}"
        for index, (task, task_id) in enumerate(zip(tasks, self.ids, strict=True)):
            history = [event for event in events if event["task_id"] == task_id]
            assert [e["version"] for e in history] == list(range(1, len(history) + 1)), history
            assert_task_is_fold(task, history)
            model = self.model[index]
            assert (task["status"], task["version"]) == (model.status, model.version), (
                f"{task_id}: the model expected {model.status} v{model.version}, got {task}"
            )
        assert {event["task_id"] for event in events} <= set(self.ids), events

    # ---- the model

    def task_id(self, command: Command) -> str:
        if command.task == GHOST:
            return "ghost"
        if command.task == BAD_ID:
            return "-bad"
        return self.ids[command.task]

    def resolve(self, reference: Command | int) -> Command | None:
        if isinstance(reference, Command):
            return reference
        return self.keyed[reference % len(self.keyed)] if self.keyed else None

    def expected_value(self, command: Command) -> Any:
        current = self.model[command.task].version if command.task >= 0 else 1
        if command.expected == "current":
            return current
        if command.expected == "stale":
            return current - 1 if current > 1 else current + 3
        return command.expected

    def predict(self, command: Command, expected: Any, batch: bool) -> Outcome:
        outcome = self._predict(command, expected, batch)
        if command.spec.verdict in ("either", "created") and command.defect is None:
            # May be refused as invalid before anything else is looked at.
            outcome.statuses.add(422)
            outcome.codes.add("validation_error")
        return outcome

    def _predict(self, command: Command, expected: Any, batch: bool) -> Outcome:
        """The contract's answer, in its order of checks: 413/422 before 404 before 409."""
        spec = command.spec
        if command.defect is not None:
            return Outcome({422}, {"validation_error"})
        if spec.verdict == "413":
            return Outcome({413}, {"payload_too_large"})
        if spec.verdict == "422":
            return Outcome({422}, {"validation_error"})
        if command.task == BAD_ID:
            return (
                Outcome({422}, {"validation_error"})
                if batch
                else Outcome({404}, {"task_not_found"})
            )
        if command.task == GHOST:
            return Outcome({404}, {"task_not_found"})
        model = self.model[command.task]
        if command.key is not None and command.key in model.keys:
            original_type, original_data, original = model.keys[command.key]
            if (original_type, original_data) == (spec.type, spec.data):
                return Outcome({200}, original=original)
            # The same key with another body: the contract only speaks of retries; either
            # the original answer or a refusal is acceptable, never a second event.
            return Outcome({200, 422}, {"validation_error"}, original=original)
        codes = set()
        if expected is not None and expected != model.version:
            codes.add("version_conflict")
        if spec.type == "created" or model.status not in TRANSITIONS[spec.type]:
            codes.add("invalid_transition")
        if codes:
            return Outcome({409}, codes)
        return Outcome({201})

    def accept(self, command: Command, event: dict[str, Any]) -> None:
        """A 201: the model moves on."""
        model = self.model[command.task]
        assert event["task_id"] == self.ids[command.task], event
        assert event["tenant"] == self.tenant, event
        assert event["type"] == command.spec.type, event
        assert semantic(event["data"]) == semantic(command.spec.data), event
        assert event["version"] == model.version + 1, (event, model)
        model.status = TRANSITIONS[command.spec.type][model.status]
        model.version += 1
        if command.key is not None:
            model.keys[command.key] = (command.spec.type, command.spec.data, event)

    def check_answer(
        self, outcome: Outcome, status: int, body: Any, command: Command, where: str
    ) -> dict[str, Any] | None:
        """Check one answer against the model; the event when one was appended (201)."""
        hypothesis.event(
            f"answered {status}"
        )  # the spread of outcomes, in --hypothesis-show-statistics
        assert status in outcome.statuses, (
            f"{where}: expected {sorted(outcome.statuses)} {sorted(outcome.codes)}, "
            f"got {status}: {body}"
        )
        if status == 200:
            assert comparable(body) == comparable(outcome.original), (
                f"{where}: a retry answered {body}, not the original {outcome.original}"
            )
            return None
        if status == 201:
            self.accept(command, body)
            appended: dict[str, Any] = body
            return appended
        assert_problem_body(body, status)
        assert body["code"] in outcome.codes, f"{where}: code {body['code']}, {outcome.codes}"
        return None

    # ---- the requests

    def item_body(self, command: Command, expected: Any) -> Any:
        if command.defect == "not_object":
            return ["not", "an", "object"]
        body: dict[str, Any] = {"type": command.spec.type, "data": command.spec.data}
        if command.defect != "no_task_id":
            body["task_id"] = self.task_id(command)
        if expected is not None:
            body["expected_version"] = expected
        if command.key is not None:
            body["idempotency_key"] = command.key
        if command.defect == "extra_member":
            body["bogus"] = 1
        return body

    async def single(self, command: Command) -> None:
        expected = self.expected_value(command)
        outcome = self.predict(command, expected, batch=False)
        body: dict[str, Any] = {"type": command.spec.type, "data": command.spec.data}
        if expected is not None:
            body["expected_version"] = expected
        if command.defect == "extra_member":
            body["bogus"] = 1
        headers = {"Idempotency-Key": command.key} if command.key is not None else {}
        response = await self.api.post(
            f"/v1/tasks/{self.task_id(command)}/events", json=body, headers=headers
        )
        where = f"POST /v1/tasks/{self.task_id(command)}/events {body} key={command.key!r}"
        assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
        if response.status_code >= 400:
            assert_problem(response, response.status_code)
        event = self.check_answer(outcome, response.status_code, response.json(), command, where)
        if response.status_code == 201:
            assert response.headers.get("location"), "a 201 carries Location"
        await self.after([event] if event else [], where)
        if command.defect is None and command.key is not None and response.status_code < 300:
            self.keyed.append(command)

    async def batch(self, items: list[Command]) -> None:
        expecteds = [self.expected_value(command) for command in items]
        body = {"events": [self.item_body(c, e) for c, e in zip(items, expecteds, strict=True)]}
        response = await self.api.post("/v1/events/batch", json=body)
        where = f"POST /v1/events/batch {body}"
        assert response.status_code == 200, f"{where}: {response.status_code} {response.text}"
        results = response.json()["results"]
        assert len(results) == len(items), results
        appended = []
        for index, (command, expected, result) in enumerate(
            zip(items, expecteds, results, strict=True)
        ):
            # Each item sees the effect of the ones before it: predict in order.
            outcome = self.predict(command, expected, batch=True)
            payload = result.get("event") if result["status"] < 300 else result.get("error")
            item_where = f"{where} item {index}"
            event = self.check_answer(outcome, result["status"], payload, command, item_where)
            if event is not None:
                appended.append(event)
            if command.defect is None and command.key is not None and result["status"] < 300:
                self.keyed.append(command)
        await self.after(appended, where)

    async def bad_batch(self, step: BadBatch) -> None:
        response = await self.api.post_raw("/v1/events/batch", step.body)
        assert_problem(response, step.status, "validation_error")
        await self.after([], f"POST /v1/events/batch {step.body!r}")

    async def after(self, appended: list[dict[str, Any]], where: str) -> None:
        """The log grew by exactly the acknowledged events; nothing else changed."""
        before_tasks, before_events = self.state
        self.state = await self.snapshot()
        tasks, events = self.state
        assert [comparable(e) for e in events] == [
            comparable(e) for e in before_events + appended
        ], (
            f"{where}: the log did not grow by exactly the acknowledged events\n"
            f"acknowledged: {appended}\nnew: {events[len(before_events) :]}"
        )
        touched = {event["task_id"] for event in appended}
        for task_id, before, now in zip(self.ids, before_tasks, tasks, strict=True):
            if task_id not in touched:
                assert now == before, f"{where}: {task_id} changed without an event"
        self.check_state()

    async def run(self) -> None:
        for task_id, create in zip(self.ids, self.program.tasks, strict=True):
            response = await self.api.post("/v1/tasks", json={"id": task_id, **create})
            assert response.status_code == 201, response.text
        self.state = await self.snapshot()
        self.check_state()
        for step in self.program.steps:
            if isinstance(step, BadBatch):
                await self.bad_batch(step)
            elif isinstance(step, Single):
                command = self.resolve(step.command)
                if command is not None:
                    await self.single(command)
            else:
                resolved = [self.resolve(item) for item in step.items]
                await self.batch([command for command in resolved if command is not None])
        await self.final_checks()

    async def final_checks(self) -> None:
        _, events = self.state
        for task_id in self.ids:
            limit = 1 + len(events) % 4
            history = await self.api.history(task_id, limit=limit)
            assert history == [e for e in events if e["task_id"] == task_id], task_id
        ghost = await self.api.get("/v1/tasks/ghost")
        assert_problem(ghost, 404, "task_not_found")


# --------------------------------------------------------------------------- the tests

BOUNDED = settings(
    max_examples=80,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one service for all examples, on purpose
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


# Passing runs take 15-25 s; the longer timeout lets a failing run finish shrinking and print
# its minimal example (each example makes dozens of requests, so shrinking takes minutes).
@pytest.mark.timeout(600)
@pytest.mark.parametrize("service", [{"max_event_bytes": MAX_EVENT_BYTES}], indirect=True)
@BOUNDED
@given(program=programs())
async def test_random_appends_fold_into_the_task(service: Service, program: Program) -> None:
    await Run(service, program).run()


async def test_failed_error_with_null_code_is_kept(service: Service) -> None:
    """``"code": null`` is allowed by the contract (``code`` is optional); the task's ``error``
    is the terminal event's ``error``. (Found by the property test; fixed in 5a2c85e.)"""
    api = service.api
    await api.create_task(id="f")
    event = await api.event("f", "failed", {"error": {"message": "m", "code": None}})
    task = await api.task("f")
    assert task["error"] == event["data"]["error"], (task["error"], event["data"])


async def test_the_fold_notices_a_wrong_task(service: Service) -> None:
    """The checker can fail: a task that is not the fold of its events is reported."""
    api = service.api
    await api.create_task(id="w")
    await api.event("w", "progress", {"done": 3, "total": 4})
    task = await api.task("w")
    history = await api.history("w")
    assert_task_is_fold(task, history)
    for name, wrong in [("percent", 70.0), ("status", "pending"), ("started_at", None)]:
        with pytest.raises(AssertionError, match=name):
            assert_task_is_fold({**task, name: wrong}, history)
    with pytest.raises(AssertionError, match="version hole"):
        assert_task_is_fold(task, [history[0], {**history[1], "version": 3}])
