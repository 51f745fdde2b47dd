"""``taskstream.d.ts`` and ``taskstream.js`` held to what the service sends.

The declarations are read with a few regular expressions (the file keeps one member a line);
Task, Event, the pages and the enumerations are compared with the service's OpenAPI document
(``/schema/openapi.json``), each event type's data with the models the service validates it
with (the document describes ``data`` only as an object). The module's fold of events into a
task is run in Node and compared with the service's own.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from dataclasses import dataclass
from typing import Any

import pytest

from service.api.dashboard import STATIC
from service.domain.models import DATA_MODELS, EventType
from tests.helpers import Service, settled

DECLARATIONS = (STATIC / "taskstream.d.ts").read_text()
MODULE = STATIC / "taskstream.js"
NODE = shutil.which("node")

TS_NAMES = {"Event": "TaskEvent"}
"""Schema names the declarations spell differently (a DOM ``Event`` type exists)."""


@dataclass(frozen=True)
class Member:
    type: str
    optional: bool


def interface(name: str) -> dict[str, Member]:
    match = re.search(rf"^export interface {name}\b[^{{]*\{{\n(.*?)^\}}", DECLARATIONS, re.M | re.S)
    assert match, f"taskstream.d.ts declares no interface {name}"
    body = re.sub(r"/\*.*?\*/", "", match.group(1), flags=re.S)
    members = {}
    for raw in body.splitlines():
        line = raw.strip()
        if not line or line.startswith("//"):
            continue
        found = re.fullmatch(r"(\w+)(\?)?: (.+);", line)
        assert found, f"{name}: cannot read the member {line!r}"
        members[found[1]] = Member(found[3], found[2] == "?")
    return members


def union(name: str) -> list[str]:
    match = re.search(rf"^export type {name} =(.*?);$", DECLARATIONS, re.M | re.S)
    assert match, f"taskstream.d.ts declares no type {name}"
    return re.findall(r'"([^"]+)"', match.group(1))


def ts_type(schema: dict[str, Any], definitions: dict[str, Any]) -> str:
    """The TypeScript spelling of a JSON schema, as the declarations write it."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        target = definitions.get(name, {})
        if "enum" in target or "properties" in target:
            return TS_NAMES.get(name, name)
        return ts_type(target, definitions)
    if "anyOf" in schema:
        return " | ".join(ts_type(option, definitions) for option in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(json.dumps(value) for value in schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        return "string"
    if kind in ("integer", "number"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "null":
        return "null"
    if kind == "array":
        return f"{ts_type(schema['items'], definitions)}[]"
    if kind == "object":
        return "Record<string, unknown>"
    assert kind is None, schema
    return "unknown"


@pytest.fixture
async def openapi(service: Service) -> dict[str, Any]:
    """The schemas of the document the service serves."""
    document = (await service.client.get("/schema/openapi.json")).json()
    schemas: dict[str, Any] = document["components"]["schemas"]
    return schemas


def test_the_enumerations_are_the_service_s(openapi: dict[str, Any]) -> None:
    assert union("TaskStatus") == openapi["TaskStatus"]["enum"]
    assert union("EventType") == openapi["EventType"]["enum"]


@pytest.mark.parametrize(
    ("schema", "declared"),
    [
        ("Task", "Task"),
        ("Event", "TaskEventOf"),
        ("TaskPage", "TaskPage"),
        ("EventPage", "EventPage"),
    ],
)
def test_each_answer_is_declared_member_for_member(
    openapi: dict[str, Any], schema: str, declared: str
) -> None:
    members = interface(declared)
    properties = openapi[schema]["properties"]
    assert list(members) == list(properties), f"{declared} and the document's {schema} differ"
    for name, member in members.items():
        # The service always sends every member (null when it has no value).
        assert not member.optional, f"{declared}.{name} is always present"
        expected = ts_type(properties[name], openapi)
        if declared == "TaskEventOf":  # generic in the type: T extends EventType
            expected = {"EventType": "T", "Record<string, unknown>": "EventDataMap[T]"}.get(
                expected, expected
            )
        assert member.type == expected, f"{declared}.{name}: {member.type} != {expected}"


STREAM_PARAMETERS = {
    "task_id": ("TasksWatchOptions", "taskId"),
    "type": ("TasksWatchOptions", "type"),
    "kind": ("TasksWatchOptions", "kind"),
    "last_event_id": ("WatchOptions", "lastEventId"),
    "access_token": ("WatchOptions", "token"),
    "progress": ("WatchOptions", "progress"),
}
"""Each query parameter of the streams, and the option of the module that sets it."""


async def test_every_stream_parameter_is_an_option_of_the_module(service: Service) -> None:
    document = (await service.client.get("/schema/openapi.json")).json()
    for path in ("/v1/stream", "/v1/tasks/{task_id}/stream"):
        for parameter in document["paths"][path]["get"]["parameters"]:
            if parameter["in"] != "query":
                continue
            name = parameter["name"]
            assert name in STREAM_PARAMETERS, f"{path}?{name}: no option of the module sets it"
            declared, option = STREAM_PARAMETERS[name]
            member = interface(declared)[option]
            assert member.optional, f"{declared}.{option}"
            if "enum" in parameter["schema"]:
                assert re.findall(r'"([^"]+)"', member.type) == parameter["schema"]["enum"]


def test_each_event_type_s_data_is_declared() -> None:
    data_map = interface("EventDataMap")
    assert list(data_map) == [member.value for member in EventType]
    for event_type, model in DATA_MODELS.items():
        name = data_map[event_type.value].type
        schema = model.model_json_schema(ref_template="#/$defs/{model}")
        definitions = schema.get("$defs", {})
        members = interface(name)
        assert set(members) == set(schema["properties"]), name
        for member_name, member in members.items():
            required = member_name in schema.get("required", [])
            assert member.optional != required, f"{name}.{member_name}: optional is {not required}"
            expected = ts_type(schema["properties"][member_name], definitions)
            assert member.type == expected, f"{name}.{member_name}: {member.type} != {expected}"


def test_the_declared_functions_are_the_module_s() -> None:
    declared = set(re.findall(r"^export (?:function|const) (\w+)", DECLARATIONS, re.M))
    exported = set(re.findall(r"^export (?:function|const) (\w+)", MODULE.read_text(), re.M))
    assert declared == exported


# ------------------------------------------------------------------------------ the fold

FOLD = """
import { applyEvent, taskFromCreated } from %s;
let input = "";
for await (const chunk of process.stdin) input += chunk;
const tasks = {};
for (const event of JSON.parse(input)) {
  const task = tasks[event.task_id];
  tasks[event.task_id] = task ? applyEvent(task, event) : taskFromCreated(event);
}
process.stdout.write(JSON.stringify(tasks));
"""

SCRIPTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "counted": [
        ("started", {"worker": "w-1"}),
        ("progress", {"done": 3, "total": 7, "message": "reading", "stage": "read"}),
        ("log", {"level": "info", "message": "a line"}),
        ("progress", {"done": 5}),  # percent from the latest total
        ("progress", {"percent": 80.5, "message": "writing"}),  # stage kept
        ("cancel_requested", {"reason": "enough"}),
        ("succeeded", {"result": {"rows": 7}}),
    ],
    "broken": [
        ("progress", {"percent": 12}),
        ("failed", {"error": {"message": "disk full", "code": "ENOSPC"}}),
    ],
    "stopped": [("cancel_requested", {}), ("cancelled", {"reason": "asked"})],
    "waiting": [("log", {"level": "debug", "message": "queued"}), ("cancel_requested", {})],
    "half": [("progress", {"done": 1, "total": 3})],
}


@pytest.mark.skipif(NODE is None, reason="node is not installed: the fold runs in Node")
async def test_the_module_folds_events_as_the_service_does(service: Service) -> None:
    api = service.api
    for task_id, script in SCRIPTS.items():
        await api.create_task(
            id=task_id, kind="fold", title=f"the {task_id} one", metadata={"n": 1}
        )
        for event_type, data in script:
            await api.event(task_id, event_type, data)
    events = await api.all_events()
    process = await asyncio.create_subprocess_exec(
        str(NODE),
        "--input-type=module",
        "-e",
        FOLD % json.dumps(MODULE.as_uri()),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(json.dumps(events).encode())
    assert process.returncode == 0, err.decode()
    folded = json.loads(out)
    for task_id in SCRIPTS:
        assert settled(folded[task_id]) == settled(await api.task(task_id)), task_id
