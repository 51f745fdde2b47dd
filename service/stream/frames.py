"""Server-Sent Events frames, encoded once per event and shared by every subscriber.

An event's frame is built from the row as stored: the JSON data and the time arrive from
Postgres as text and are spliced in, never parsed and re-dumped, which is what keeps replaying
a long history cheap.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from service.domain.state import TaskState
from service.domain.wire import encode, task_object

KEEP_ALIVE = b": keep-alive\n\n"
TERMINAL_TYPES = frozenset({"succeeded", "failed", "cancelled"})


def chunked(body: bytes) -> bytes:
    """``body`` as one HTTP/1.1 chunk, for writing straight to a chunked response's socket."""
    return b"%x\r\n%b\r\n" % (len(body), body)


class Frame:
    """One event as every subscriber receives it, with what the hub routes it by."""

    __slots__ = ("body", "chunk", "kind", "seq", "task_id", "tenant", "type")

    def __init__(self, seq: int, tenant: str, task_id: str, kind: str, type: str, body: bytes):
        self.seq = seq
        self.tenant = tenant
        self.task_id = task_id
        self.kind = kind
        self.type = type
        self.body = body
        self.chunk = chunked(body)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


KEEP_ALIVE_FRAME = Frame(0, "", "", "", "", KEEP_ALIVE)
"""The idle comment, shaped as a frame so that every sink takes it the same way."""


@lru_cache(maxsize=4096)
def _json_string(value: str) -> str:
    return encode(value).decode()


def frame_text(row: Any) -> str:
    """An event's frame from a row of ``queries.STREAM_COLUMNS``.

    Task ids match ``^[A-Za-z0-9][A-Za-z0-9._:-]*$`` and types are the contract's names, so
    neither needs JSON escaping; a tenant comes from a token and may hold anything.
    """
    seq, tenant, task_id, _, type_, version, data, time = row
    return (
        f'id: {seq}\nevent: {type_}\ndata: {{"seq":{seq},"task_id":"{task_id}",'
        f'"tenant":{_json_string(tenant)},"version":{version},"type":"{type_}",'
        f'"data":{data},"time":"{time}"}}\n\n'
    )


def event_frame(row: Any) -> Frame:
    """The listener's frame: the bytes every subscriber gets, and what the hub routes by."""
    seq, tenant, task_id, kind, type_ = row[:5]
    return Frame(seq, tenant, task_id, kind, type_, frame_text(row).encode())


def snapshot_frame(task: TaskState) -> bytes:
    return b"id: %d\nevent: snapshot\ndata: %b\n\n" % (task.last_seq, encode(task_object(task)))


def reset_frame(pruned_through_seq: int) -> bytes:
    """History after the client's position was pruned: it must reload, then follow from here."""
    return (
        b'id: %d\nevent: reset\ndata: {"reason":"history_pruned","pruned_through_seq":%d}\n\n'
        % (pruned_through_seq, pruned_through_seq)
    )


def retry_frame(milliseconds: int) -> bytes:
    return b"retry: %d\n\n" % milliseconds
