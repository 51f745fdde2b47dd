"""``taskstream export``: the tenant's events as NDJSON, CSV or Parquet.

Events come one at a time from the client's ``export()`` (the service's NDJSON export) and go
straight out, so memory stays flat however many there are; Parquet is written a row group at a
time.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

from service.cli import CliError
from service.client import Event
from service.console.connection import connection
from service.console.output import to_json
from service.domain.wire import CSV_COLUMNS, timestamp

PARQUET_ROW_GROUP = 10_000
"""Events per Parquet row group: large enough to compress well, small enough that a group's
Python objects stay a few megabytes."""
NO_PYARROW = (
    "--format parquet needs pyarrow, the 'parquet' extra: pip install 'taskstream[parquet]'"
    " (or uv sync --extra parquet)"
)

Row = tuple[int, str, str, int, str, str, datetime]
Writer = Callable[[Iterable[Event], BinaryIO], int]


def main(args: argparse.Namespace) -> int:
    write: Writer = WRITERS[args.format]
    if args.format == "parquet":
        if args.output is None:
            raise CliError("--format parquet writes a file: give --output FILE")
        _pyarrow()  # missing: say so before asking the service for anything
    with connection(args).client() as client, _target(args.output) as out:
        events = client.export(
            task_id=args.task_id,
            type=args.type,
            kind=args.kind,
            after=args.after,
            since=args.since,
            until=args.until,
        )
        count = write(events, out)
    if args.output is not None:
        print(f"taskstream: exported {count} events to {args.output}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _target(path: str | None) -> Iterator[BinaryIO]:
    """Standard output, or a file written under a temporary name and renamed once complete,
    so that an interrupted export never leaves a file that looks whole."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    final = Path(path)
    partial = final.with_name(f".{final.name}.{os.getpid()}.partial")
    try:
        out = partial.open("wb")
    except OSError as exc:
        raise CliError(f"cannot write {final}: {exc.strerror}") from exc
    try:
        with out:
            yield out
        partial.replace(final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _row(event: Event) -> Row:
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
    time = event.time.astimezone(UTC)
    return event.seq, event.task_id, event.tenant, event.version, event.type.value, data, time


def _ndjson(events: Iterable[Event], out: BinaryIO) -> int:
    count = 0
    for event in events:
        out.write(to_json(event).encode() + b"\n")
        count += 1
    return count


def _csv(events: Iterable[Event], out: BinaryIO) -> int:
    """The service's CSV: a header of the Event fields, ``data`` as JSON text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for *fields, time in map(_row, events):
        writer.writerow((*fields, timestamp(time)))
        out.write(buffer.getvalue().encode())
        buffer.seek(0)
        buffer.truncate()
        count += 1
    out.write(buffer.getvalue().encode())  # the header alone, when nothing was selected
    return count


def _parquet(events: Iterable[Event], out: BinaryIO) -> int:
    pyarrow, parquet = _pyarrow()
    schema = pyarrow.schema(
        [
            ("seq", pyarrow.int64()),
            ("task_id", pyarrow.string()),
            ("tenant", pyarrow.string()),
            ("version", pyarrow.int32()),
            ("type", pyarrow.string()),
            ("data", pyarrow.string()),
            ("time", pyarrow.timestamp("us", tz="UTC")),
        ]
    )
    rows = map(_row, events)
    count = 0
    with parquet.ParquetWriter(out, schema) as writer:
        while group := list(itertools.islice(rows, PARQUET_ROW_GROUP)):
            columns = [
                pyarrow.array(values, type=field.type)
                for values, field in zip(zip(*group, strict=True), schema, strict=True)
            ]
            writer.write_batch(pyarrow.record_batch(columns, schema=schema))
            count += len(group)
    return count


def _pyarrow() -> tuple[Any, ModuleType]:
    try:
        import pyarrow  # type: ignore[import-untyped]
        import pyarrow.parquet  # type: ignore[import-untyped]
    except ImportError:
        raise CliError(NO_PYARROW) from None
    return pyarrow, pyarrow.parquet


WRITERS: dict[str, Writer] = {"ndjson": _ndjson, "csv": _csv, "parquet": _parquet}
