"""Memory and speed of a whole-tenant export, ``GET /v1/events`` as NDJSON and CSV
(``make bench-export``).

One run, on one machine, against one freshly created database:

1. drops and recreates the bench database, applies the migrations (``taskstream migrate``) and
   seeds it with set-based SQL: ``--tasks`` tasks (10,000) of ``--events-per-task`` events (100)
   each — ``created``, ``started``, ``progress`` with percent/done/total/message/stage, ``log``
   lines, and a terminal ``succeeded``, ``failed`` or ``cancelled`` — interleaved the way
   concurrent workers would write them (100 tasks at a time), task rows folded to match, and
   ``events_seq`` set past the largest seq;
2. for every repetition and format, starts ``taskstream serve --workers 1`` fresh, waits for
   ``/readyz``, warms it up with a small export of the same format, reads the worker's idle
   ``VmRSS`` and resets its ``VmHWM`` (``/proc/PID/clear_refs``), then exports every event
   with one streaming client that discards the bytes and counts the lines, while a thread
   samples ``VmRSS`` every ``--sample-ms`` (25 ms);
3. prints the medians as a markdown table and writes them into ``docs/performance.md``, with
   the target: the worker's peak RSS grows by less than 50 MiB over idle.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import append
import fanout
import httpx

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DOCS = ROOT / "docs" / "performance.md"
TENANT = "bench"
BEGIN_MARK = "<!-- BEGIN bench/export.py results (generated; edit the text around it) -->"
END_MARK = "<!-- END bench/export.py results -->"
SECTION_TITLE = "## Export (NDJSON and CSV)"
ACCEPT = {"ndjson": "application/x-ndjson", "csv": "text/csv"}
PAUSE_AFTER_BYTES = 10_000_000

TARGET_GROWTH_MIB = 50.0

# Tasks run this many at a time: their events interleave in seq order as concurrent workers'
# appends would, and the heap is written in seq order, as appends write it.
CONCURRENT_TASKS = 100

# One statement per step; {tasks}, {events} and {concurrent} are integers put in by seed_sql().
SEED_SQL = """
CREATE TEMP TABLE seed AS
WITH grid AS (
  SELECT t, v, row_number() OVER (ORDER BY t / {concurrent}, v, t % {concurrent}) AS seq
  FROM generate_series(0, {tasks} - 1) AS t, generate_series(1, {events}) AS v
), shaped AS (
  SELECT seq, t, v,
    'export-' || lpad(t::text, 6, '0') AS task_id,
    (ARRAY['import', 'report', 'thumbnail', 'backup', 'etl'])[t % 5 + 1] AS kind,
    CASE
      WHEN v = 1 THEN 'created'
      WHEN v = 2 THEN 'started'
      WHEN v = {events} THEN CASE
        WHEN t % 100 < 90 THEN 'succeeded' WHEN t % 100 < 97 THEN 'failed' ELSE 'cancelled' END
      WHEN v % 5 = 0 THEN 'log'
      ELSE 'progress'
    END AS type,
    least(1000, (v - 2) * 1000 / greatest({events} - 3, 1))::bigint AS done,
    CASE WHEN v * 3 < {events} THEN 'download' WHEN v * 3 < 2 * {events} THEN 'transform'
         ELSE 'upload' END AS stage,
    timestamptz '2026-01-01 00:00:00+00' + seq * interval '3 milliseconds' AS time
  FROM grid
)
SELECT seq, t, task_id, kind, v AS version, type, done, stage, time,
  CASE type
    WHEN 'created' THEN jsonb_build_object(
      'kind', kind,
      'title', initcap(kind) || ' job #' || t,
      'metadata', jsonb_build_object(
        'owner', 'team-' || t % 7, 'priority', t % 3,
        'source', 's3://bench-input/' || kind || '/' || task_id || '.csv'))
    WHEN 'started' THEN jsonb_build_object('worker', 'worker-' || t % 16 || '.bench.internal')
    WHEN 'progress' THEN jsonb_build_object(
      'percent', round(done / 10.0, 1), 'done', done, 'total', 1000,
      'message', 'processed ' || done || ' of 1000 items', 'stage', stage)
    WHEN 'log' THEN jsonb_build_object(
      'level', (ARRAY['debug', 'info', 'info', 'warning'])[v / 5 % 4 + 1],
      'message', 'chunk ' || v / 5 || ' of ' || stage || ' written, "' || kind || '" checksum '
        || md5(task_id || v))
    WHEN 'succeeded' THEN jsonb_build_object('result', jsonb_build_object(
      'rows', 1000 + t % 997, 'output', 's3://bench-output/' || task_id || '.parquet'))
    WHEN 'failed' THEN jsonb_build_object('error', jsonb_build_object(
      'message', 'upstream timed out after 30 s', 'code', 'E_TIMEOUT'))
    ELSE jsonb_build_object('reason', 'cancelled by operator, see ticket OPS-' || t)
  END AS data
FROM shaped;

CREATE INDEX ON seed (task_id, version);

INSERT INTO tasks (tenant, id, kind, title, status, percent, done, total, message, stage,
                   result, error, metadata, version, last_seq, created_at, updated_at,
                   started_at, finished_at)
SELECT '{tenant}', c.task_id, c.kind, c.data ->> 'title', last.type,
  CASE WHEN last.type = 'succeeded' THEN 100 ELSE (p.data ->> 'percent')::float8 END,
  p.done, CASE WHEN p.done IS NOT NULL THEN 1000 END, p.data ->> 'message', p.stage,
  last.data -> 'result', last.data -> 'error', c.data -> 'metadata',
  last.version, last.seq, c.time, last.time, s.time, last.time
FROM seed c
JOIN seed s ON s.task_id = c.task_id AND s.version = 2
JOIN seed last ON last.task_id = c.task_id AND last.version = {events}
LEFT JOIN (
  SELECT DISTINCT ON (task_id) * FROM seed WHERE type = 'progress' ORDER BY task_id, version DESC
) p ON p.task_id = c.task_id
WHERE c.version = 1;

INSERT INTO events (seq, tenant, task_id, kind, version, type, data, time)
SELECT seq, '{tenant}', task_id, kind, version, type, data, time FROM seed ORDER BY seq;

SELECT setval('events_seq', (SELECT max(seq) FROM events));
"""


def seed_sql(tasks: int, events: int) -> str:
    return SEED_SQL.format(
        tasks=int(tasks),
        events=int(events),
        concurrent=min(CONCURRENT_TASKS, int(tasks)),
        tenant=TENANT,
    )


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class ExportRun:
    """One format, one repetition, on a freshly started worker."""

    format: str
    pause_s: float  # how long the client stopped reading, after PAUSE_AFTER_BYTES
    repeat: int
    events: int
    lines: int
    bytes: int
    seconds: float  # without the client's pause
    ready_rss_kib: int  # VmRSS once /readyz answered, before the warm-up
    idle_rss_kib: int
    peak_rss_kib: int  # the largest VmRSS sampled during the export
    hwm_kib: int  # VmHWM after the export (reset before it): 0 when it could not be reset
    after_rss_kib: int
    samples: int
    service_cpu_pct: float
    client_cpu_pct: float
    last_seq: int

    @property
    def scenario(self) -> str:
        return scenario_label(self.format, self.pause_s)

    @property
    def peak_kib(self) -> int:
        return max(self.peak_rss_kib, self.hwm_kib)

    @property
    def growth_mib(self) -> float:
        return (self.peak_kib - self.idle_rss_kib) / 1024

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0; needs ptrace rights)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples a process's VmRSS in a thread; keeps the largest value and the count."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError, RuntimeError):
                self.peak_kib = max(self.peak_kib, proc_status_kib(self.pid, "VmRSS"))
                self.samples += 1
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Received:
    status: int
    lines: int
    bytes: int
    tail: bytes
    seconds: float
    cpu_s: float


def download(url: str, token: str, accept: str, timeout: float, *, pause: float = 0.0) -> Received:
    """Stream the answer, discarding it: count its bytes and lines, keep its last bytes.

    With ``pause``, stop reading for that long once ``PAUSE_AFTER_BYTES`` have arrived, as a
    slow or stalled client would; the pause is not counted in ``seconds``.
    """
    lines = size = 0
    paused = 0.0
    tail = b""
    headers = {"Authorization": f"Bearer {token}", "Accept": accept}
    cpu0 = time.thread_time()
    started = time.perf_counter()
    with (
        httpx.Client(timeout=httpx.Timeout(timeout)) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"export answered {response.status_code}: {response.text[:500]}")
        for chunk in response.iter_raw():
            lines += chunk.count(b"\n")
            size += len(chunk)
            tail = tail[-4096:] + chunk[-4096:]
            if pause and not paused and size >= PAUSE_AFTER_BYTES:
                time.sleep(pause)
                paused = pause
        status = response.status_code
    return Received(
        status,
        lines,
        size,
        tail,
        time.perf_counter() - started - paused,
        time.thread_time() - cpu0,
    )


def last_seq(fmt: str, tail: bytes) -> int:
    """The seq of the last line of an export."""
    line = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    if fmt == "ndjson":
        return int(json.loads(line)["seq"])
    return int(line.split(b",", 1)[0])


@dataclass
class Context:
    args: argparse.Namespace
    pg: append.Pg
    env: dict[str, str]
    token: str
    workdir: Path
    events: int
    max_seq: int


def start_server(ctx: Context, port: int) -> append.Server:
    args = ctx.args
    cmd = args.server_cmd.format(host="127.0.0.1", port=port)
    if args.server_args:
        cmd += " " + args.server_args
    server = append.Server(shlex.split(cmd), ctx.env, ctx.workdir / f"server-{port}.log")
    server.start()
    server.wait_ready("127.0.0.1", port, args.ready_timeout)
    return server


def scenario_label(fmt: str, pause: float) -> str:
    if not pause:
        return fmt
    return f"{fmt}, client stops reading for {pause:g} s after {PAUSE_AFTER_BYTES / 1e6:g} MB"


def export_run(ctx: Context, fmt: str, pause: float, repeat: int) -> ExportRun:
    """A fresh worker: warm up, read idle memory, export everything while sampling RSS."""
    args = ctx.args
    port = append.free_port()
    server = start_server(ctx, port)
    try:
        assert server.pid is not None
        worker = fanout.worker_pid(server.pid)
        ready = proc_status_kib(worker, "VmRSS")
        base = f"http://127.0.0.1:{port}/v1/events"
        # A small export of the same format first, so that code run on first use (imports,
        # prepared statements, the pool's connection) is not counted as the export's memory.
        warm = download(
            f"{base}?after={max(ctx.max_seq - 1000, 0)}", ctx.token, ACCEPT[fmt], args.timeout
        )
        if warm.status != 200:
            raise RuntimeError(f"warm-up export answered {warm.status}")
        time.sleep(args.settle)
        idle = proc_status_kib(worker, "VmRSS")
        hwm_reset = reset_peak(worker)
        ticks0 = fanout.proc_ticks(worker)
        with RssSampler(worker, args.sample_ms / 1000) as sampler:
            got = download(base, ctx.token, ACCEPT[fmt], args.timeout, pause=pause)
        ticks1 = fanout.proc_ticks(worker)
        hwm = proc_status_kib(worker, "VmHWM") if hwm_reset else 0
        after = proc_status_kib(worker, "VmRSS")
    finally:
        code = server.stop()
        if code not in (0, None):
            print(f"note: server exited with {code}; log: {server.log_path}", flush=True)
    expected = ctx.events + (1 if fmt == "csv" else 0)
    seq = last_seq(fmt, got.tail)
    if got.lines != expected or seq != ctx.max_seq:
        raise RuntimeError(
            f"{fmt} export: {got.lines:,} lines (expected {expected:,}), last seq {seq} "
            f"(expected {ctx.max_seq})"
        )
    return ExportRun(
        format=fmt,
        pause_s=pause,
        repeat=repeat,
        events=ctx.events,
        lines=got.lines,
        bytes=got.bytes,
        seconds=got.seconds,
        ready_rss_kib=ready,
        idle_rss_kib=idle,
        peak_rss_kib=sampler.peak_kib,
        hwm_kib=hwm,
        after_rss_kib=after,
        samples=sampler.samples,
        service_cpu_pct=(ticks1 - ticks0) / append.CLK_TCK / got.seconds * 100,
        client_cpu_pct=got.cpu_s / got.seconds * 100,
        last_seq=seq,
    )


def describe(run: ExportRun) -> str:
    return (
        f"[{run.repeat + 1}] {run.scenario}: {run.events:,} events, {run.bytes / 1e6:,.0f} MB in "
        f"{run.seconds:.1f} s ({run.events_per_s:,.0f} events/s, {run.mb_per_s:.1f} MB/s); RSS "
        f"ready {mib(run.ready_rss_kib)} MiB, idle {mib(run.idle_rss_kib)} MiB, peak "
        f"{mib(run.peak_rss_kib)} MiB "
        f"sampled ({run.samples} samples) / VmHWM {run.hwm_kib / 1024:.1f} MiB, growth "
        f"{run.growth_mib:.1f} MiB, after {run.after_rss_kib / 1024:.1f} MiB; service CPU "
        f"{run.service_cpu_pct:.0f} %, client CPU {run.client_cpu_pct:.0f} %"
    )


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def median(runs: Sequence[ExportRun], attr: str) -> float:
    return float(statistics.median(float(getattr(r, attr)) for r in runs))


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def by_scenario(runs: Sequence[ExportRun]) -> dict[str, list[ExportRun]]:
    grouped: dict[str, list[ExportRun]] = {}
    for run in runs:
        grouped.setdefault(run.scenario, []).append(run)
    return grouped


def render_table(runs: Sequence[ExportRun]) -> str:
    rows = [
        "| scenario | events | MB | duration s | events/s | MB/s | RSS at ready MiB "
        "| idle RSS MiB | peak RSS MiB (sampled / VmHWM) | growth over idle MiB (min-max) "
        "| RSS after MiB | service CPU | client CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for label, mine in by_scenario(runs).items():
        growth = [r.growth_mib for r in mine]
        rows.append(
            f"| {label} | {mine[0].events:,} | {median(mine, 'bytes') / 1e6:,.0f} "
            f"| {median(mine, 'seconds'):.1f} | {median(mine, 'events_per_s'):,.0f} "
            f"| {median(mine, 'mb_per_s'):.1f} | {mib(median(mine, 'ready_rss_kib'))} "
            f"| {mib(median(mine, 'idle_rss_kib'))} "
            f"| {mib(median(mine, 'peak_rss_kib'))} / {mib(median(mine, 'hwm_kib'))} "
            f"| **{median(mine, 'growth_mib'):.1f}** ({min(growth):.1f}-{max(growth):.1f}) "
            f"| {mib(median(mine, 'after_rss_kib'))} | {median(mine, 'service_cpu_pct'):.0f} % "
            f"| {median(mine, 'client_cpu_pct'):.0f} % |"
        )
    return "\n".join(rows)


def render_targets(runs: Sequence[ExportRun], target: float) -> str:
    lines = ["| target | measured | ratio | |", "|---|---|--:|---|"]
    for label, mine in by_scenario(runs).items():
        worst = max(r.growth_mib for r in mine)
        lines.append(
            f"| {label}, {mine[0].events:,} events: peak RSS grows < {target:g} MiB over idle "
            f"(every run) | {worst:.1f} MiB at most (median {median(mine, 'growth_mib'):.1f}) "
            f"| {worst / target:.2f}x of the limit | {append.verdict(worst < target)} |"
        )
    return "\n".join(lines)


def render_report(
    runs: Sequence[ExportRun], args: argparse.Namespace, info: Mapping[str, str]
) -> str:
    server = args.server_cmd.format(host="127.0.0.1", port="PORT")
    if args.server_args:
        server += " " + args.server_args
    lines = [
        f"Command: `{info['command']}`",
        "",
        f"- Date: {info['date']}" + (f"; code: commit {info['code']}" if info.get("code") else ""),
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, {info['os']}; "
        f"{info.get('pg_version', 'PostgreSQL ?')}; Python {info['python']}. Before the run "
        f"the machine was {info.get('idle_busy', '?')} busy (of {int(info['nproc']) * 100} %).",
        f"- Data: {args.tasks:,} tasks x {args.events_per_task} events, one tenant "
        f"(seeded with set-based SQL in {info.get('seed_seconds', '?')} s).",
        f"- Service: `{server}`, started fresh for every run; *RSS at ready* is the worker's "
        "VmRSS when `/readyz` first answers 200; then a warm-up export of the last 1,000 events "
        f"in the same format, {args.settle:g} s of rest, and *idle RSS* is read and VmHWM reset "
        "(`/proc/PID/clear_refs`). During the export a thread samples VmRSS every "
        f"{args.sample_ms:g} ms; *growth* is max(sampled peak, VmHWM) - idle.",
        "- Client: one httpx streaming `GET /v1/events` with the format's `Accept`, bytes "
        "discarded, lines counted (every run checked: one line per event, plus the CSV header; "
        "the last line has the newest seq). The stalled-client row stops reading once "
        f"{PAUSE_AFTER_BYTES / 1e6:g} MB have arrived, to show that the service waits for the "
        "socket instead of buffering; its duration leaves the pause out. CPU columns are per "
        "cent of one core: the worker process, and the client's own thread.",
        f"- {args.repeats} repetition(s) of each scenario, interleaved; medians shown.",
        "",
        render_table(runs),
        "",
        render_targets(runs, args.target_mib),
    ]
    return "\n".join(lines).rstrip() + "\n"


SECTION_TEXT = f"""{SECTION_TITLE}

`bench/export.py` (`make bench-export`; `make bench` runs it after the other two) checks the
contract's promise that an export of `GET /v1/events` with `Accept: application/x-ndjson` or
`text/csv` streams the whole selection in constant memory. It seeds 1,000,000 events with SQL
(10,000 tasks x 100 events of every type, interleaved 100 tasks at a time, task rows folded to
match), then, on a freshly started `taskstream serve --workers 1` per run, exports all of them
through one streaming client and samples the worker's resident memory throughout. The target
is that the worker's peak RSS stays within 50 MiB of its RSS when idle (after a small warm-up
export, so first-use costs are not counted). A third scenario stops reading for 10 s part-way
through: a service that buffered what the client has not taken yet would grow there.

Why it stays flat: the export reads the selection through a server-side cursor inside one
read-only repeatable-read transaction, 1,000 rows at a time (`Reader.export`), and encodes each
chunk into one body part. Litestar's streaming response awaits uvicorn's `send` for every part,
and `send` waits while the socket's write buffer is above its high-water mark, so a slow client
holds the cursor back rather than letting encoded chunks pile up in the worker: at any moment
the worker holds about one chunk of rows and one encoded part.

Run it with `uv run python bench/export.py` (a few minutes; `--quick` for a 100,000-event smoke
run that leaves this file alone, `--repeats`, `--formats`, `--tasks`, `--events-per-task`,
`--sample-ms`, `--no-docs`, `--json FILE`).

### Latest export results
"""


def write_docs(path: Path, report: str) -> None:
    """Replace the generated block, or add the section (and the block) at the end."""
    append.replace_block(path, report, begin=BEGIN_MARK, end=END_MARK, section=SECTION_TEXT)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark the memory and speed of taskstream's NDJSON and CSV exports.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1,000 tasks (100,000 events), 1 repetition, docs untouched",
    )
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--events-per-task", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3, help="repetitions (medians are reported)")
    p.add_argument("--formats", nargs="+", choices=list(ACCEPT), default=list(ACCEPT))
    p.add_argument(
        "--pause-client",
        type=float,
        default=10.0,
        help="also export (the first format) with a client that stops reading for this many "
        "seconds mid-stream; 0 to skip",
    )
    p.add_argument("--sample-ms", type=float, default=25.0, help="VmRSS sampling interval")
    p.add_argument("--settle", type=float, default=1.0, help="seconds of rest before idle RSS")
    p.add_argument("--timeout", type=float, default=120.0, help="client read timeout, seconds")
    p.add_argument(
        "--target-mib", type=float, default=TARGET_GROWTH_MIB, help="allowed growth over idle"
    )
    p.add_argument(
        "--server-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="Postgres server to use (its database part is ignored)",
    )
    p.add_argument(
        "--database",
        default="taskstream_export_bench",
        help="bench database: DROPPED and recreated",
    )
    p.add_argument("--keep-database", action="store_true")
    p.add_argument(
        "--server-cmd",
        default="uv run taskstream serve --host {host} --port {port} --workers 1",
        help="how to start the service",
    )
    p.add_argument("--server-args", default="--no-access-log", help="extra arguments for it")
    p.add_argument(
        "--migrate-cmd", default="uv run taskstream migrate", help="how to apply migrations"
    )
    p.add_argument("--ready-timeout", type=float, default=90.0)
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown file to update (default {DOCS.relative_to(ROOT)}, none with --quick)",
    )
    p.add_argument("--no-docs", action="store_true", help="do not write the markdown file")
    p.add_argument("--json", type=Path, default=None, help="also write every run as JSON here")
    args = p.parse_args(argv)
    if args.tasks < 1 or args.events_per_task < 3:
        p.error("need at least 1 task and 3 events per task")
    if args.quick:
        if args.tasks == p.get_default("tasks"):
            args.tasks = 1_000
        args.repeats = 1
    if args.no_docs:
        args.output = None
    elif args.output is None and not args.quick:
        args.output = DOCS
    return args


def describe_run(argv: Sequence[str] | None) -> dict[str, str]:
    return append.run_description(
        "export.py", argv, "timings will be noisy (memory numbers are not affected)"
    )


def seed(pg: append.Pg, tasks: int, events: int) -> tuple[int, int, float]:
    """Seed the events; return (how many, the largest seq, seconds taken)."""
    started = time.monotonic()
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write("BEGIN;\n" + seed_sql(tasks, events) + "\nCOMMIT;\n")
        script.flush()
        pg.psql_file(Path(script.name))
    pg.psql("VACUUM (ANALYZE) events")
    pg.psql("VACUUM (ANALYZE) tasks")
    count, newest = pg.psql(
        f"SELECT count(*), max(seq) FROM events WHERE tenant = {append.sql_literal(TENANT)}"
    ).split("|")
    return int(count), int(newest), time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pg = append.Pg.from_url(args.server_url, args.database)
    lock = append.claim_database(pg)
    info = describe_run(argv)
    print(f"bench database {pg.database!r} on {pg.host}:{pg.port}: recreating", flush=True)
    pg.recreate()
    info["pg_version"] = "PostgreSQL " + pg.psql("SHOW server_version")
    secret = secrets.token_hex(32)
    env = dict(os.environ)
    env.update(TASKSTREAM_DATABASE_URL=pg.url(), TASKSTREAM_JWT_SECRET=secret)
    from service.tokens import mint

    token = mint(secret, sub="bench", tenant=TENANT, scopes="events:read", ttl_seconds=24 * 3600)
    workdir = Path(tempfile.mkdtemp(prefix="taskstream-export-"))
    runs: list[ExportRun] = []
    try:
        append.migrate(argparse.Namespace(migrate_cmd=args.migrate_cmd), env)
        total = args.tasks * args.events_per_task
        print(f"seeding {total:,} events", flush=True)
        events, max_seq, seconds = seed(pg, args.tasks, args.events_per_task)
        info["seed_seconds"] = f"{seconds:.0f}"
        print(f"seeded {events:,} events in {seconds:.1f} s", flush=True)
        ctx = Context(args, pg, env, token, workdir, events, max_seq)
        scenarios = [(fmt, 0.0) for fmt in args.formats]
        if args.pause_client > 0:
            scenarios.append((args.formats[0], args.pause_client))
        for repeat in range(args.repeats):
            for fmt, pause in scenarios:
                run = export_run(ctx, fmt, pause, repeat)
                print(describe(run), flush=True)
                runs.append(run)
    finally:
        if not args.keep_database:
            with contextlib.suppress(RuntimeError):
                pg.drop()
    document = {"info": info, "runs": [asdict(run) for run in runs]}
    append.publish_report(render_report(runs, args, info), args, document, write_docs)
    shutil.rmtree(workdir, ignore_errors=True)
    lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
