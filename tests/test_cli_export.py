"""``taskstream export``: each format holds exactly what ``/v1/events`` answers."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from service.console.export import PARQUET_ROW_GROUP
from tests.helpers import CSV_HEADER, Service
from tests.test_cli import Cli

Events = list[dict[str, Any]]


async def seed(service: Service) -> Events:
    """Events of tenant t1 with awkward data, and one of another tenant that never shows."""
    api = service.api
    metadata = {"big": 2**62, "ratio": 1.5, "nested": {"list": [1, None, "s"]}}
    await api.create_task(id="a", kind="import", title="ünïcode ✓", metadata=metadata)
    await api.event("a", "progress", {"percent": 12.5, "message": 'a "quote", a comma\nand more'})
    await api.create_task(id="b", kind="render")
    await api.event("b", "log", {"level": "info", "message": "x"})
    await api.event("a", "succeeded", {"result": [1, 2]})
    await service.as_(tenant="t2").create_task(id="other", kind="import")
    return await api.all_events()


def parquet_rows(path: Path) -> Events:
    table = pq.read_table(path)
    assert table.schema == pa.schema(
        [
            ("seq", pa.int64()),
            ("task_id", pa.string()),
            ("tenant", pa.string()),
            ("version", pa.int32()),
            ("type", pa.string()),
            ("data", pa.string()),
            ("time", pa.timestamp("us", tz="UTC")),
        ]
    )
    time = "%Y-%m-%dT%H:%M:%S.%fZ"
    return [
        row | {"data": json.loads(row["data"]), "time": row["time"].strftime(time)}
        for row in table.to_pylist()
    ]


def csv_rows(text: str) -> Events:
    assert text.splitlines()[0] == CSV_HEADER
    return [
        row
        | {"seq": int(row["seq"]), "version": int(row["version"])}
        | {"data": json.loads(row["data"])}
        for row in csv.DictReader(io.StringIO(text, newline=""))
    ]


def files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


async def test_each_format_equals_the_events_endpoint(service: Service, tmp_path: Path) -> None:
    events = await seed(service)
    cli = Cli(service, tmp_path)

    ndjson = await cli.ok("export")
    assert [json.loads(line) for line in ndjson.lines] == events
    assert ndjson.err == ""

    assert csv_rows((await cli.ok("export", "--format", "csv")).out) == events

    written = await cli.ok("export", "--format", "parquet", "--output", "events.parquet")
    assert written.out == ""
    assert written.err == f"taskstream: exported {len(events)} events to events.parquet\n"
    assert parquet_rows(tmp_path / "events.parquet") == events

    await cli.ok("export", "--format", "csv", "-o", "events.csv")
    assert csv_rows((tmp_path / "events.csv").read_text()) == events
    assert files(tmp_path) == ["events.csv", "events.parquet"], "and no partial file"


async def test_since_until_and_the_selection_filters(service: Service, tmp_path: Path) -> None:
    events = await seed(service)
    cli = Cli(service, tmp_path)

    async def exported(*args: str) -> Events:
        return [json.loads(line) for line in (await cli.ok("export", *args)).lines]

    since, until = events[1]["time"], events[3]["time"]
    assert await exported("--since", since, "--until", until) == events[1:3]
    assert await service.api.all_events(since=since, until=until) == events[1:3]
    assert await exported("--since", "1h") == events
    assert await exported("--until", "1h") == []
    assert await exported("--after", str(events[2]["seq"])) == events[3:]
    assert await exported("--task-id", "a", "--type", "progress", "--type", "succeeded") == [
        event for event in events if event["task_id"] == "a" and event["version"] > 1
    ]
    assert await exported("--kind", "render") == [e for e in events if e["task_id"] == "b"]

    bad = await cli("export", "--since", "2026-01-01T00:00:00")  # no offset
    assert bad.status == 2 and "RFC 3339" in bad.err


async def test_parquet_is_written_a_row_group_at_a_time(service: Service, tmp_path: Path) -> None:
    api = service.api
    await api.create_task(id="t", kind="k")
    count = PARQUET_ROW_GROUP + 500
    for start in range(0, count, 1000):
        items = [
            {"task_id": "t", "type": "log", "data": {"level": "info", "message": str(n)}}
            for n in range(start, min(count, start + 1000))
        ]
        assert (await api.batch(items)).status_code == 200
    await Cli(service, tmp_path).ok("export", "--format", "parquet", "-o", "big.parquet")
    metadata = pq.ParquetFile(tmp_path / "big.parquet").metadata
    assert (metadata.num_rows, metadata.num_row_groups) == (count + 1, 2)


async def test_what_cannot_be_exported_leaves_no_file(service: Service, tmp_path: Path) -> None:
    await seed(service)
    cli = Cli(service, tmp_path)
    refused = await cli("export", "-o", "out.ndjson", scopes="tasks:read")
    assert refused.status == 1 and "403 forbidden" in refused.err

    to_stdout = await cli("export", "--format", "parquet")
    assert to_stdout.status == 1 and "--output FILE" in to_stdout.err

    no_pyarrow = tmp_path / "shadow" / "pyarrow"
    no_pyarrow.mkdir(parents=True)
    (no_pyarrow / "__init__.py").write_text("raise ImportError('pyarrow is not installed')\n")
    shadowed = {"PYTHONPATH": str(no_pyarrow.parent)}
    missing = await cli("export", "--format", "parquet", "-o", "out.parquet", env=shadowed)
    assert missing.status == 1 and "pip install 'taskstream[parquet]'" in missing.err
    assert files(tmp_path) == ["shadow"]
