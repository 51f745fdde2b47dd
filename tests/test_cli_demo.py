"""``taskstream demo``: bounded in time, and what it leaves looks like real traffic."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

from service.console.demo import KINDS
from tests.helpers import Service
from tests.test_cli import Cli, read_line

EXCEPTION_NAMES = {
    "ValueError",
    "ConnectionResetError",
    "RuntimeError",
    "OSError",
    "TimeoutError",
    "PermissionError",
}


async def test_a_bounded_run_leaves_a_plausible_set_of_tasks(
    service: Service, tmp_path: Path
) -> None:
    began = time.monotonic()
    result = await Cli(service, tmp_path).ok(
        "demo", "--duration", "5", "--workers", "6", "--seed", "7", seconds=60
    )
    assert time.monotonic() - began < 40  # 5 s of work, plus start-up on a busy machine
    assert "tasks in" in result.lines[-1] and "seed 7" in result.lines[-1]

    api = service.api
    tasks = await api.all_tasks()
    statuses = Counter(task["status"] for task in tasks)
    assert len(tasks) >= 8, statuses
    assert set(statuses) == {"succeeded", "failed", "cancelled"}, "none left open"
    assert statuses["succeeded"] > statuses["failed"], statuses
    assert len({task["kind"] for task in tasks}) >= 3
    assert {task["kind"] for task in tasks} <= {kind.name for kind in KINDS}
    assert all(task["lease_seconds"] and task["title"] for task in tasks)

    events = await api.all_events()
    types = Counter(event["type"] for event in events)
    assert types["progress"] >= len(tasks) and types["log"] >= len(tasks)
    assert types["started"] == len(tasks)
    for task in tasks:
        history = [event["type"] for event in events if event["task_id"] == task["id"]]
        if task["status"] == "failed":
            assert task["error"]["code"] in EXCEPTION_NAMES, task["error"]
            assert task["error"]["message"]
        if task["status"] == "cancelled":
            assert history.index("cancel_requested") < history.index("cancelled"), history
        if task["status"] == "succeeded":
            assert task["percent"] == 100 and task["result"]


async def test_ctrl_c_cancels_the_running_jobs_and_ends_with_a_summary(
    service: Service, tmp_path: Path
) -> None:
    cli = Cli(service, tmp_path)
    process = await cli.start("demo", "--duration", "60", "--workers", "2", "--seed", "1")
    try:
        assert "2 workers for 60 s" in await read_line(process.stdout)
        for _ in range(150):
            if await service.api.all_tasks(status="running"):
                break
            await asyncio.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert "tasks in" in out.decode().splitlines()[-1]
    tasks = await service.api.all_tasks()
    assert tasks and not [task for task in tasks if task["status"] in ("pending", "running")]
    assert "cancelled" in {task["status"] for task in tasks}
