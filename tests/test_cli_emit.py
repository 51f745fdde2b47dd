"""``taskstream emit``: a shell script creates a task and reports on it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.faults import running_proxy
from tests.helpers import Service
from tests.test_cli import UNAVAILABLE, Cli


async def test_a_task_from_creation_to_success(service: Service, tmp_path: Path) -> None:
    cli = Cli(service, tmp_path)
    created = await cli.ok(
        "emit",
        "--kind",
        "import",
        "--title",
        "customers.csv",
        "--metadata",
        '{"rows": 1200}',
        "--lease-seconds",
        "600",
    )
    task_id = created.out.strip()
    assert created.lines == [task_id]

    printed = [
        (await cli.ok("emit", task_id, *args)).out
        for args in [
            ("started", "--worker", "host-1"),
            ("progress", "--percent", "40", "--stage", "parse", "reading rows"),
            ("log", "--level", "warning", "3 rows without email"),
            ("progress", "--done", "900", "--total", "1200", "--message", "loading"),
            ("log", "all loaded"),
            ("succeeded", "--result", '{"rows": 1197}'),
        ]
    ]
    history = await service.api.history(task_id)
    assert [json.loads(out) for out in printed] == history[1:]
    assert [(event["type"], event["data"]) for event in history] == [
        ("created", {"kind": "import", "title": "customers.csv", "metadata": {"rows": 1200}}),
        ("started", {"worker": "host-1"}),
        ("progress", {"percent": 40, "stage": "parse", "message": "reading rows"}),
        ("log", {"level": "warning", "message": "3 rows without email"}),
        ("progress", {"done": 900, "total": 1200, "message": "loading"}),
        ("log", {"level": "info", "message": "all loaded"}),
        ("succeeded", {"result": {"rows": 1197}}),
    ]
    task = await service.api.task(task_id)
    assert (task["status"], task["percent"], task["stage"]) == ("succeeded", 100, "parse")
    assert task["lease_seconds"] == 600


async def test_failed_cancelled_and_any_data(service: Service, tmp_path: Path) -> None:
    cli = Cli(service, tmp_path)
    for task_id in ("a", "b", "c"):
        await cli.ok("emit", "--kind", "render", "--id", task_id, "--quiet")
    await cli.ok("emit", "a", "failed", "GPU out of memory", "--code", "OOM", "-q")
    await cli.ok("emit", "b", "cancelled", "--reason", "not needed", "-q")
    await cli.ok(
        "emit", "c", "progress", "--data", '{"percent": 5, "frame": 12}', "--percent", "7", "-q"
    )
    assert (await service.api.history("a"))[-1]["data"] == {
        "error": {"message": "GPU out of memory", "code": "OOM"}
    }
    assert (await service.api.history("b"))[-1]["data"] == {"reason": "not needed"}
    assert (await service.api.history("c"))[-1]["data"] == {"percent": 7, "frame": 12}

    as_json = await cli.ok("emit", "--kind", "k", "--id", "d", "--json")
    assert json.loads(as_json.out) == await service.api.task("d") | {
        "elapsed_seconds": None,
        "eta_seconds": None,
    }


async def test_idempotency_key_and_expected_version(service: Service, tmp_path: Path) -> None:
    cli = Cli(service, tmp_path)
    await cli.ok("emit", "--kind", "k", "--id", "t", "--idempotency-key", "create-t")
    again = await cli.ok("emit", "--kind", "k", "--id", "t", "--idempotency-key", "create-t")
    assert again.out == "t\n"

    first = await cli.ok("emit", "t", "log", "once", "--idempotency-key", "step-3")
    repeat = await cli.ok("emit", "t", "log", "once", "--idempotency-key", "step-3")
    assert json.loads(first.out) == json.loads(repeat.out)
    assert [event["type"] for event in await service.api.history("t")] == ["created", "log"]

    stale = await cli("emit", "t", "log", "late", "--expected-version", "1")
    assert stale.status == 1 and "409 version_conflict" in stale.err
    await cli.ok("emit", "t", "log", "in step", "--expected-version", "2")


async def test_refusals_exit_1_with_the_problem_on_stderr(service: Service, tmp_path: Path) -> None:
    cli = Cli(service, tmp_path)
    await cli.ok("emit", "--kind", "k", "--id", "t", "-q")
    await cli.ok("emit", "t", "succeeded", "-q")
    cases = {
        ("emit", "nope", "progress", "--percent", "1"): "404 task_not_found",
        ("emit", "t", "log", "too late"): "409 invalid_transition",
        ("emit", "t", "progress", "--percent", "300"): "422 validation_error: data.percent",
        ("emit", "t", "log", "--level", "warning"): "data.message",
        ("emit", "t", "log", "x", "--percent", "3"): "--percent: not for log events",
        ("emit", "--kind", "k", "--stage", "s"): "--stage: only for appending an event",
        ("emit", "t"): "give the event TYPE",
        ("emit",): "needs --kind",
    }
    for args, expected in cases.items():
        result = await cli(*args)
        assert (result.status, result.out) == (1, ""), (args, result)
        assert result.err.startswith("taskstream: error: "), result.err
        assert expected in result.err, (args, result.err)
    assert len(await service.api.history("t")) == 2, "a refused request changes nothing"

    for args in [("emit", "--data", "[1]"), ("emit", "t", "progress", "--percent", "x")]:
        assert (await cli(*args)).status == 2


async def test_a_worker_learns_of_a_cancel_request(service: Service, tmp_path: Path) -> None:
    cli = Cli(service, tmp_path)
    await cli.ok("emit", "--kind", "k", "--id", "t", "-q")
    quiet = await cli.ok("emit", "t", "progress", "--percent", "10", "-q")
    assert quiet.err == ""
    assert (await service.api.post("/v1/tasks/t/cancel", json={})).status_code == 201
    told = await cli.ok("emit", "t", "progress", "--percent", "20", "-q")
    assert "cancellation of task t was requested" in told.err


async def test_the_clients_retries_apply(service: Service, tmp_path: Path) -> None:
    async with running_proxy(service.base_url) as proxy:
        cli = Cli(service, tmp_path)
        at_proxy = ("--url", proxy.base_url, "--token", service.token())
        await cli.ok("emit", "--kind", "k", "--id", "t", "-q", *at_proxy, connect=False)

        # The answer is lost after the service committed: the retry appends nothing more.
        proxy.drop_after_forward("POST /v1/tasks/t/events")
        proxy.answer("POST /v1/tasks/t/events", 503, times=1)
        await cli.ok("emit", "t", "log", "once", *at_proxy, connect=False)
        assert [event["type"] for event in await service.api.history("t")] == ["created", "log"]

        proxy.answer("POST /v1/tasks/t/events", 503, times=100)
        down = await cli("emit", "t", "log", "never", *at_proxy, connect=False)
        assert down.status == UNAVAILABLE and "503" in down.err, down
