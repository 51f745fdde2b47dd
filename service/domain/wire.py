"""JSON as clients see it. Stored JSON text is spliced in as is, never decoded and re-encoded."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import msgspec

from service.domain.state import StoredEvent, TaskState

encode = msgspec.json.Encoder().encode
_sorted = msgspec.json.Encoder(order="sorted").encode


def fingerprint(value: Any) -> str:
    """Equal for equal JSON values, whatever their key order."""
    return hashlib.sha256(_sorted(value)).hexdigest()


def timestamp(value: datetime) -> str:
    """RFC 3339 in UTC, always with microseconds; the database hands out UTC datetimes.

    Formatted by hand: ``strftime`` costs about three times as much, once per event answered.
    """
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 (faster than an f-string)
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
    )


def parse_timestamp(value: str) -> datetime | None:
    """An RFC 3339 date-time with an offset, in UTC; None for anything else or out of range."""
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None or "T" not in value.upper():
            return None
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _optional_time(value: datetime | None) -> str | None:
    return None if value is None else timestamp(value)


def _raw(text: str | None) -> msgspec.Raw | None:
    return None if text is None else msgspec.Raw(text)


def task_object(task: TaskState) -> dict[str, Any]:
    return {
        "id": task.id,
        "tenant": task.tenant,
        "kind": task.kind,
        "title": task.title,
        "status": task.status.value,
        "percent": task.percent,
        "done": task.done,
        "total": task.total,
        "message": task.message,
        "stage": task.stage,
        "result": _raw(task.result),
        "error": _raw(task.error),
        "metadata": _raw(task.metadata),
        "version": task.version,
        "last_seq": task.last_seq,
        "created_at": timestamp(task.created_at),
        "updated_at": timestamp(task.updated_at),
        "started_at": _optional_time(task.started_at),
        "finished_at": _optional_time(task.finished_at),
        "cancel_requested": task.cancel_seq is not None,
        "lease_seconds": task.lease_seconds,
        "elapsed_seconds": task.elapsed_seconds,
        "eta_seconds": task.eta_seconds,
    }


def event_object(event: StoredEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "task_id": event.task_id,
        "tenant": event.tenant,
        "version": event.version,
        "type": event.type,
        "data": msgspec.Raw(event.data),
        "time": timestamp(event.time),
    }


CSV_COLUMNS = ("seq", "task_id", "tenant", "version", "type", "data", "time")
