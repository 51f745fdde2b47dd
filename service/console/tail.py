"""``taskstream tail``: the tenant's tasks, or one task, live in the terminal.

Without ``--task`` it reads one page of tasks, then follows ``/v1/stream`` from that page's
``as_of_seq``, so that nothing happening in between is missed or shown twice. With ``--task``
it follows the task's own stream, which starts with a snapshot and ends after the terminal
event. Either way the client reconnects by itself; this module only folds and displays.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol

from rich import box
from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from service.cli import CliError
from service.client import AsyncTaskstream, Event, EventType, Reset, Snapshot, Task, TaskStatus
from service.console.board import Board, Row, task_state
from service.console.connection import connection
from service.console.output import to_json
from service.domain.problems import InvalidTransition
from service.domain.state import TaskState
from service.domain.wire import timestamp

REFRESH_SECONDS = 0.25
LISTING_LIMIT = 1000
"""The service's largest page of tasks."""
TABLE_LINES = 6
"""Terminal lines the table takes besides its rows (heading, rules, caption, a spare)."""
STATUS_STYLES = {
    TaskStatus.PENDING: "dim",
    TaskStatus.RUNNING: "cyan",
    TaskStatus.SUCCEEDED: "green",
    TaskStatus.FAILED: "red",
    TaskStatus.CANCELLED: "yellow",
}


def main(args: argparse.Namespace) -> int:
    if args.task is not None and (args.kind or args.status):
        raise CliError("--kind and --status choose the table's tasks; --task follows one task")
    live = not (args.plain or args.json) and sys.stdout.isatty()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a tail ends
        asyncio.run(_tail(args, live))
    return 0


async def _tail(args: argparse.Namespace, live: bool) -> None:
    board = Board(args.status or (), args.rows)
    view: View = LiveView(board, focus=args.task) if live else LineView(board, as_json=args.json)
    async with connection(args).async_client() as client, view:
        if args.task is None:
            await _follow_all(client, board, view, args.kind)
        else:
            await _follow_task(client, board, view, args.task)


async def _follow_all(
    client: AsyncTaskstream, board: Board, view: View, kinds: list[str] | None
) -> None:
    async def listed() -> int:
        statuses = [status.value for status in board.statuses]
        limit = min(board.rows, LISTING_LIMIT)
        page = await client.list_tasks_page(status=statuses, kind=kinds, limit=limit)
        board.load(page.items)
        return page.as_of_seq

    position = await listed()
    async for item in client.subscribe_all(kind=kinds, last_event_id=position):
        if isinstance(item, Reset):
            view.note(f"history before seq {item.pruned_through_seq} was pruned; reloading")
            await listed()
        elif isinstance(item, Event):
            view.event(item, await _fold(client, board, item))


async def _follow_task(client: AsyncTaskstream, board: Board, view: View, task_id: str) -> None:
    async for item in client.subscribe(task_id):
        if isinstance(item, Snapshot):
            board.load([item.task])
            view.snapshot(item.task)
        elif isinstance(item, Reset):
            view.note(f"history before seq {item.pruned_through_seq} was pruned; reloading")
            board.load([await client.get_task(task_id)])
        else:
            view.event(item, await _fold(client, board, item))


async def _fold(client: AsyncTaskstream, board: Board, event: Event) -> TaskState:
    """Fold the event in; a task first met mid-life (or out of step) is read from the service,
    whose answer already includes the event."""
    try:
        return board.apply(event)
    except (KeyError, InvalidTransition):
        board.load([await client.get_task(event.task_id)])
        return board.apply(event)


# ---------------------------------------------------------------------- views


class View(Protocol):
    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def snapshot(self, task: Task) -> None: ...

    def event(self, event: Event, state: TaskState) -> None: ...

    def note(self, text: str) -> None: ...


class LineView:
    """One line per event (plain, or the Event as JSON), flushed at once for pipes."""

    def __init__(self, board: Board, *, as_json: bool) -> None:
        self.board = board
        self.as_json = as_json

    async def __aenter__(self) -> LineView:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def snapshot(self, task: Task) -> None:
        if not self.as_json:
            print(snapshot_line(task_state(task)), flush=True)

    def event(self, event: Event, state: TaskState) -> None:
        if self.board.matches(state):
            print(to_json(event) if self.as_json else event_line(event, state), flush=True)

    def note(self, text: str) -> None:
        print(f"taskstream: {text}", file=sys.stderr, flush=True)


class LiveView:
    """A table redrawn a few times a second (elapsed times and ETAs move with the clock);
    following one task, its events are printed above it as they come."""

    def __init__(self, board: Board, *, focus: str | None) -> None:
        self.board = board
        self.focus = focus
        self.console = Console()
        self.live = Live(
            get_renderable=self._render,
            console=self.console,
            auto_refresh=False,  # redrawn from the event loop: the board is not thread-safe
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveView:
        self.live.start(refresh=True)
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self.live.refresh()
        self.live.stop()

    async def _tick(self) -> None:
        while True:
            self.live.refresh()
            await asyncio.sleep(REFRESH_SECONDS)

    def snapshot(self, task: Task) -> None:
        return None  # the table shows it

    def event(self, event: Event, state: TaskState) -> None:
        if self.focus is not None:
            self.live.console.print(Text(event_line(event, state)))

    def note(self, text: str) -> None:
        self.live.console.print(Text(text, style="yellow"))

    def _render(self) -> RenderableType:
        room = self.console.height - TABLE_LINES
        return board_table(self.board, datetime.now(UTC), room=room, focus=self.focus)


def board_table(board: Board, now: datetime, *, room: int, focus: str | None = None) -> Table:
    """The watched tasks as a table: a row each, as many as there is ``room`` for."""
    rows, hidden = board.shown(room)
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False)
    table.add_column("task", no_wrap=True, overflow="ellipsis", ratio=2)
    table.add_column("kind", no_wrap=True, overflow="ellipsis", max_width=14)
    table.add_column("status", no_wrap=True)
    table.add_column("progress", no_wrap=True, width=20)
    table.add_column("%", justify="right", no_wrap=True, width=4)
    table.add_column("stage · message", no_wrap=True, overflow="ellipsis", ratio=3)
    table.add_column("elapsed", justify="right", no_wrap=True)
    table.add_column("ETA", justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*_cells(row, now))
    if focus is not None:
        table.title = focus
    else:
        more = f"{hidden} more not shown · " if hidden else ""
        table.caption = f"{more}{len(rows)} shown · Ctrl-C to quit"
    return table


def _cells(row: Row, now: datetime) -> list[RenderableType]:
    state = row.state
    style = STATUS_STYLES[state.status]
    status = Text(state.status.value, style=style)
    if state.cancel_pending:
        status = Text("cancelling", style="yellow")
    percent = 100.0 if state.status is TaskStatus.SUCCEEDED else state.percent
    if state.status is TaskStatus.RUNNING and percent is None:
        bar = ProgressBar(total=None, width=20)  # running, amount unknown: a pulse
    else:
        bar = ProgressBar(total=100, completed=percent or 0, width=20, complete_style=style)
    return [
        Text(state.title or state.id),
        Text(state.kind),
        status,
        bar,
        Text("" if percent is None else f"{percent:.0f}%"),
        _activity(state),
        Text(_duration(row.elapsed(now))),
        Text(_duration(row.eta(now))),
    ]


def _activity(state: TaskState) -> Text:
    if state.status is TaskStatus.FAILED:
        return Text(_error_text(state), style="red")
    text = Text()
    if state.stage:
        text.append(state.stage, style="bold")
        text.append(" ")
    text.append(state.message or "")
    return text


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    hours, rest = divmod(round(seconds), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


# ---------------------------------------------------------------------- lines


def event_line(event: Event, state: TaskState) -> str:
    """``<time> <task id> <type> <what it says>``: one event, readable and greppable."""
    data = event.data
    details = {
        EventType.CREATED: f"{data.get('kind')} {json.dumps(data.get('title') or '')}",
        EventType.STARTED: str(data.get("worker") or ""),
        EventType.PROGRESS: _progress_text(state),
        EventType.LOG: f"{data.get('level')}: {data.get('message')}",
        EventType.SUCCEEDED: "" if data.get("result") is None else _compact(data["result"]),
        EventType.FAILED: _error_text(state),
        EventType.CANCELLED: str(data.get("reason") or ""),
        EventType.CANCEL_REQUESTED: str(data.get("reason") or ""),
    }[event.type]
    parts = [timestamp(event.time.astimezone(UTC)), event.task_id, event.type.value, details]
    return " ".join(part for part in parts if part)


def snapshot_line(state: TaskState) -> str:
    """The task's state when the stream opened, in the shape of an event line."""
    what = _error_text(state) if state.status is TaskStatus.FAILED else _progress_text(state)
    time = timestamp(state.updated_at.astimezone(UTC))
    return " ".join(part for part in [time, state.id, "snapshot", state.status.value, what] if part)


def _progress_text(state: TaskState) -> str:
    parts = []
    if state.percent is not None:
        parts.append(f"{state.percent:.1f}%")
    if state.done is not None:
        parts.append(f"{state.done}/{state.total}" if state.total else str(state.done))
    if state.stage:
        parts.append(f"[{state.stage}]")
    if state.message:
        parts.append(state.message)
    return " ".join(parts)


def _error_text(state: TaskState) -> str:
    error = json.loads(state.error) if state.error else {}
    message = str(error.get("message", ""))
    return f"{message} ({error['code']})" if error.get("code") else message


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
