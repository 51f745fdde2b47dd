"""``taskstream emit``: create a task, or append one event to it, from a shell script.

id=$(taskstream emit --kind import --title "customers.csv")
taskstream emit "$id" progress --percent 40 --stage parse "reading rows"
taskstream emit "$id" succeeded --result '{"rows": 1200}'
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from service.cli import CliError
from service.client import EventType, Taskstream
from service.console.connection import connection
from service.console.output import to_json

FIELDS: dict[EventType, tuple[str, ...]] = {
    EventType.STARTED: ("worker",),
    EventType.PROGRESS: ("percent", "done", "total", "stage", "message"),
    EventType.LOG: ("level", "message"),
    EventType.SUCCEEDED: ("result",),
    EventType.FAILED: ("error", "code"),
    EventType.CANCELLED: ("reason",),
    EventType.CANCEL_REQUESTED: ("reason",),
}
"""The data options each type takes (the option's name is the data member's)."""
TEXT: dict[EventType, str] = {
    EventType.PROGRESS: "message",
    EventType.LOG: "message",
    EventType.FAILED: "error",
    EventType.CANCELLED: "reason",
    EventType.CANCEL_REQUESTED: "reason",
}
"""The option that the positional TEXT stands for."""
DATA_OPTIONS = sorted({name for names in FIELDS.values() for name in names})
CREATE_OPTIONS = ("kind", "title", "metadata", "id", "lease_seconds")
TERMINAL = frozenset({EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED})


def main(args: argparse.Namespace) -> int:
    with connection(args).client() as client:
        if args.task_id is None:
            _create(client, args)
        else:
            _append(client, args)
    return 0


def _create(client: Taskstream, args: argparse.Namespace) -> None:
    event_options = [*DATA_OPTIONS, "data", "expected_version"]
    _refuse(args, event_options, "only for appending an event (TASK_ID TYPE)")
    if args.kind is None:
        raise CliError("creating a task needs --kind (or give TASK_ID TYPE to append an event)")
    task = client.create_task(
        args.kind,
        title=args.title,
        metadata=args.metadata,
        id=args.id,
        lease_seconds=args.lease_seconds,
        idempotency_key=args.idempotency_key,
    )
    if args.json:
        print(to_json(task))
    elif not args.quiet:
        print(task.id)


def _append(client: Taskstream, args: argparse.Namespace) -> None:
    if args.type is None:
        raise CliError(f"after TASK_ID, give the event TYPE: {', '.join(FIELDS)}")
    _refuse(args, list(CREATE_OPTIONS), "only for creating a task (no TASK_ID)")
    type = EventType(args.type)
    appended = client.append(
        args.task_id,
        type,
        event_data(type, args),
        expected_version=args.expected_version,
        idempotency_key=args.idempotency_key,
    )
    if not args.quiet:
        print(to_json(appended.event))
    if appended.cancel_requested and type not in TERMINAL:
        print(f"taskstream: cancellation of task {args.task_id} was requested", file=sys.stderr)


def event_data(type: EventType, args: argparse.Namespace) -> dict[str, Any]:
    """``--data``, with the members the type's options (and TEXT) give put over it."""
    given = {name: getattr(args, name) for name in DATA_OPTIONS if getattr(args, name) is not None}
    if args.text is not None:
        if type not in TEXT:
            raise CliError(f"{type} events take no TEXT")
        if TEXT[type] in given:
            raise CliError(f"give the {type} {TEXT[type]} as TEXT or as --{TEXT[type]}, not both")
        given[TEXT[type]] = args.text
    allowed = FIELDS[type]
    stray = [name for name in given if name not in allowed]
    if stray:
        takes = ", ".join(f"--{name}" for name in allowed)
        raise CliError(f"{_options(stray)}: not for {type} events ({type} takes {takes})")
    data = dict(args.data or {})
    if type is EventType.FAILED:
        error = data.get("error")
        error = dict(error) if isinstance(error, dict) else {}
        if "error" in given:
            error["message"] = given.pop("error")
        if "code" in given:
            error["code"] = given.pop("code")
        if error:
            data["error"] = error
    data.update(given)
    if type is EventType.LOG:
        data.setdefault("level", "info")
    return data


def _refuse(args: argparse.Namespace, names: list[str], why: str) -> None:
    given = [name for name in names if getattr(args, name) not in (None, False)]
    if given:
        raise CliError(f"{_options(given)}: {why}")


def _options(names: list[str]) -> str:
    return ", ".join("--" + name.replace("_", "-") for name in names)
