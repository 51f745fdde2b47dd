"""``taskstream tail``: events as they happen, plain when standard output is not a terminal;
and the board behind the live table, folded as the service folds."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from service.client import Event, Task
from service.console.board import Board
from service.console.tail import board_table
from tests.helpers import Api, Service
from tests.test_cli import Cli, read_line

PROBE = "probe-"


async def following(process: asyncio.subprocess.Process, api: Api, kind: str = "k") -> None:
    """Return once the tail shows what happens: probe tasks, each failed at once, until one
    is printed (the tail prints nothing of what its first listing already shows)."""
    for n in itertools.count():
        task_id = f"{PROBE}{n}"
        await api.create_task(id=task_id, kind=kind)
        await api.event(task_id, "failed", {"error": {"message": "probe"}})
        with contextlib.suppress(TimeoutError):
            await read_line(process.stdout, seconds=1)
            return


async def lines_until(process: asyncio.subprocess.Process, end: str) -> list[str]:
    """The lines up to the first that contains ``end`` (included), probes left out."""
    lines: list[str] = []
    while not lines or end not in lines[-1]:
        line = await read_line(process.stdout)
        if PROBE not in line:
            lines.append(line)
    return lines


@contextlib.asynccontextmanager
async def running(
    process: asyncio.subprocess.Process,
) -> AsyncIterator[asyncio.subprocess.Process]:
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_plain_lines_for_what_happens_while_it_runs(service: Service, tmp_path: Path) -> None:
    api = service.api
    await api.create_task(id="before", kind="import")
    async with running(await Cli(service, tmp_path).start("tail")) as process:
        await following(process, api)
        await api.create_task(id="t", kind="import", title="customers.csv")
        await api.event("t", "started", {"worker": "w-1"})
        await api.event("t", "progress", {"percent": 40, "stage": "parse", "message": "reading"})
        await api.event("t", "log", {"level": "warning", "message": "disk almost full"})
        await api.event("t", "progress", {"done": 3, "total": 4})
        await api.event("before", "cancelled", {"reason": "not needed"})
        await api.event("t", "succeeded", {"result": {"rows": 3}})
        lines = await lines_until(process, "succeeded")

        history = await api.history("t")
        times = [event["time"] for event in history]
        assert lines == [
            f'{times[0]} t created import "customers.csv"',
            f"{times[1]} t started w-1",
            f"{times[2]} t progress 40.0% [parse] reading",
            f"{times[3]} t log warning: disk almost full",
            f"{times[4]} t progress 75.0% 3/4 [parse] reading",
            f"{(await api.history('before'))[-1]['time']} before cancelled not needed",
            f'{times[5]} t succeeded {{"rows":3}}',
        ]
        process.send_signal(signal.SIGINT)  # Ctrl-C ends a tail, successfully
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_one_task_until_its_terminal_event(service: Service, tmp_path: Path) -> None:
    api = service.api
    await api.create_task(id="t", kind="render")
    await api.event("t", "progress", {"percent": 10, "stage": "frames"})
    async with running(await Cli(service, tmp_path).start("tail", "--task", "t")) as process:
        snapshot = await read_line(process.stdout)
        assert snapshot.split(" ", 1)[1] == "t snapshot running 10.0% [frames]"
        await api.event("t", "progress", {"percent": 50, "message": "half"})
        await api.event("t", "failed", {"error": {"message": "GPU out of memory", "code": "OOM"}})
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0
    times = [event["time"] for event in (await api.history("t"))[-2:]]
    assert out.decode().splitlines() == [
        f"{times[0]} t progress 50.0% [frames] half",
        f"{times[1]} t failed GPU out of memory (OOM)",
    ]


async def test_json_lines_with_kind_and_status_filters(service: Service, tmp_path: Path) -> None:
    api = service.api
    cli = Cli(service, tmp_path)
    tail = ("tail", "--json", "--kind", "render", "--status", "failed")
    async with running(await cli.start(*tail)) as process:
        await following(process, api, kind="render")
        for task_id, kind in [("r1", "render"), ("r2", "render"), ("i1", "import")]:
            await api.create_task(id=task_id, kind=kind)
            await api.event(task_id, "progress", {"percent": 30})
        await api.event("i1", "failed", {"error": {"message": "not a render"}})
        await api.event("r2", "succeeded")
        await api.event("r1", "failed", {"error": {"message": "boom"}})
        await api.create_task(id="end", kind="render")
        await api.event("end", "failed", {"error": {"message": "the end"}})
        lines = await lines_until(process, '"the end"')
    assert [json.loads(line) for line in lines] == [
        (await api.history("r1"))[-1],
        (await api.history("end"))[-1],
    ]


async def test_a_finished_task_an_unknown_one_and_misused_options(
    service: Service, tmp_path: Path
) -> None:
    api = service.api
    cli = Cli(service, tmp_path)
    await api.create_task(id="done", kind="k")
    await api.event("done", "succeeded")
    finished = await cli.ok("tail", "--task", "done", "--plain")
    assert [line.split(" ", 1)[1] for line in finished.lines] == ["done snapshot succeeded 100.0%"]

    unknown = await cli("tail", "--task", "nope")
    assert unknown.status == 1 and "404 task_not_found" in unknown.err
    misused = await cli("tail", "--task", "done", "--status", "failed")
    assert misused.status == 1 and "--task follows one task" in misused.err


# ---------------------------------------------------------------------- the board


async def test_the_board_folds_events_as_the_service_does(service: Service) -> None:
    api = service.api
    await api.create_task(id="t", kind="import", title="x")
    for type, data in [
        ("started", {"worker": "w"}),
        ("progress", {"done": 10, "total": 40, "stage": "load", "message": "m"}),
        ("log", {"level": "info", "message": "hello"}),
        ("cancel_requested", {"reason": "stop"}),
        ("progress", {"done": 30}),
        ("failed", {"error": {"message": "boom", "code": "E"}}),
    ]:
        await api.event("t", type, data)
    board = Board()
    for event in await api.history("t"):
        state = board.apply(Event.model_validate(event))
    expected = Task.model_validate(await api.task("t"))
    folded = Task.model_validate(
        state._asdict()
        | {
            "result": None,
            "error": json.loads(state.error or "null"),
            "metadata": None,
            "cancel_requested": state.cancel_seq is not None,
        }
    )
    assert folded.model_dump(exclude={"elapsed_seconds", "eta_seconds", "lease_seconds"}) == (
        expected.model_dump(exclude={"elapsed_seconds", "eta_seconds", "lease_seconds"})
    )


async def test_the_table_shows_progress_elapsed_and_eta(service: Service) -> None:
    api = service.api
    await api.create_task(id="slow", kind="render", title="teaser.mp4")
    await api.create_task(id="idle", kind="report")
    await api.create_task(id="broken", kind="import")
    await api.event("broken", "failed", {"error": {"message": "bad row 7", "code": "ValueError"}})
    board = Board(rows=10)
    board.load([Task.model_validate(task) for task in await api.all_tasks()])
    await api.event("slow", "progress", {"percent": 20, "stage": "frames", "message": "f 20"})
    await asyncio.sleep(0.2)
    await api.event("slow", "progress", {"percent": 40, "stage": "frames", "message": "f 40"})
    for event in (await api.history("slow"))[1:]:
        board.apply(Event.model_validate(event))

    console = Console(record=True, width=160)
    console.print(board_table(board, datetime.now(UTC), room=10))
    text = console.export_text()
    running, pending, failed = (
        next(line for line in text.splitlines() if name in line)
        for name in ("teaser.mp4", "idle", "broken")
    )
    assert "running" in running and "40%" in running and "frames f 40" in running
    assert running.split()[-2].count(":") == 1, "elapsed"
    assert running.split()[-1].count(":") == 1, "an ETA from the pace of the progress events"
    assert "pending" in pending
    assert "failed" in failed and "bad row 7 (ValueError)" in failed
    assert text.index("teaser.mp4") < text.index("idle") < text.index("broken")
