"""SSE fan-out of taskstream, next to a pure-asyncio broadcast server (``make bench-fanout``).

One run, on one machine, against one freshly created database:

1. drops and recreates the bench database and applies the migrations (``taskstream migrate``);
   raises this process's ``RLIMIT_NOFILE`` soft limit to the hard limit, which the servers and
   the client inherit;
2. for every repetition, every connection count N (1,000 / 5,000 / 10,000 by default) and each
   of the two servers — ``taskstream serve --workers N`` (``--workers``, default 1) and
   ``bench/broadcast_server.py`` (the least a Python process can do per delivery: one
   ``transport.write`` per subscriber):

   * starts the server fresh, warms it up (a few connections, a few events) and reads the
     ``VmRSS`` of its processes (the parent and every worker, summed);
   * opens N SSE connections with ``sseload`` (../shared/tools/sseload, a C epoll client) —
     ``GET /v1/stream`` with a bearer token for taskstream — and waits until all are open;
   * publishes 10 events/s for ``--duration`` seconds with ``bench/ssepublish.py``: for
     taskstream through the real append API (``POST /v1/tasks/{id}/events``, a ``progress``
     event on a running task), for the broadcast server with ``POST /publish``; every event's
     data carries ``"sent_ns": <time.time_ns()>`` of its scheduled send time and sseload
     measures publish-to-client latency from it;
   * waits until every connection has every event (or delivery stalls), reads ``VmRSS`` again
     and stops the client and the server;

3. replay: appends ``--replay-events`` (100,000) events through the batch endpoint and lets one
   client resume with ``Last-Event-ID`` set just before them, timing how fast they all arrive;
4. prints the medians as a markdown table and writes them into ``docs/performance.md``.

CPU is sampled from ``/proc`` during the publishing window: the server's process tree,
Postgres (the bench database's backends and the shared background processes), sseload and
the publisher — so a saturated client shows in the results instead of hiding in them.

With ``--workers N`` above 1 the same load runs against ``taskstream serve --workers N``: the
kernel spreads the connections over the workers (they accept from one shared socket), memory
and CPU are summed over all the server's processes, and how many connections each worker held
is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import append
import httpload

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DOCS = ROOT / "docs" / "performance.md"
BROADCAST_SERVER = BENCH_DIR / "broadcast_server.py"
PUBLISHER = BENCH_DIR / "ssepublish.py"
DEFAULT_SSELOAD_DIR = ROOT.parent / "shared" / "tools" / "sseload"
TENANT = "bench"
LIVE_TASK = "fanout-live"
REPLAY_TASKS = [f"fanout-replay-{i}" for i in range(10)]
BEGIN_MARK = "<!-- BEGIN bench/fanout.py results (generated; edit the text around it) -->"
END_MARK = "<!-- END bench/fanout.py results -->"
SECTION_TITLE = "## Fan-out (Server-Sent Events)"
SERVERS = ("taskstream", "broadcast", "coalesced")
SERVER_LABELS = {
    "taskstream": "taskstream",
    "broadcast": "pure-asyncio broadcast (ceiling)",
    "coalesced": "pure-asyncio broadcast, `--coalesce`",
}

TARGET_RSS_KIB = 16.0
TARGET_RSS_CONNS = 10_000
TARGET_P99_MS = {5_000: 100.0, 10_000: 250.0}
TARGET_REPLAY = 200_000.0

# The data of a published event. taskstream stores it as jsonb and sends it back inside the
# Event object; the broadcast server sends the body as given, so its template is shaped like
# taskstream's Event to keep the frames about the same size.
TASKSTREAM_TEMPLATE = (
    '{{"type":"progress","data":{{"percent":50,"message":"{pad}","sent_ns":{sent_ns}}}}}'
)
BROADCAST_TEMPLATE = (
    '{{"seq":{seq},"task_id":"' + LIVE_TASK + '","tenant":"' + TENANT + '","version":{seq},'
    '"type":"progress","data":{{"message": "{pad}", "percent": 50, "sent_ns": {sent_ns}}},'
    '"time":"2026-01-01T00:00:00.000000Z"}}'
)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class LiveRun:
    """One server, one connection count, one repetition."""

    server: str
    conns: int
    repeat: int
    published: int
    publish_errors: int
    conns_ok: int
    conns_failed: int
    conns_closed: int
    delivered: int
    per_conn_min: int
    per_conn_max: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    window_s: float
    open_s: float
    drain_s: float
    server_cpu_pct: float
    postgres_cpu_pct: float
    busy_pct: float
    sseload_cpu_pct: float
    publisher_cpu_pct: float
    rss_before_kib: int
    rss_open_kib: int
    rss_after_kib: int
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def expected(self) -> int:
        """Every acknowledged event to every connection that was opened."""
        return self.published * self.conns_ok

    @property
    def shortfall(self) -> int:
        return max(0, self.expected - self.delivered)

    @property
    def rss_per_conn_kib(self) -> float:
        grown = max(self.rss_open_kib, self.rss_after_kib) - self.rss_before_kib
        return grown / self.conns_ok if self.conns_ok else 0.0

    @property
    def deliveries_per_s(self) -> float:
        return self.delivered / self.window_s if self.window_s else 0.0

    @property
    def other_cpu_pct(self) -> float:
        mine = (
            self.server_cpu_pct
            + self.postgres_cpu_pct
            + self.sseload_cpu_pct
            + self.publisher_cpu_pct
        )
        return max(0.0, self.busy_pct - mine)


@dataclass
class ReplayRun:
    """One resuming client reading ``expected`` stored events."""

    repeat: int
    expected: int
    delivered: int
    seconds: float
    server_cpu_pct: float
    postgres_cpu_pct: float
    busy_pct: float
    client_cpu_pct: float
    conns_closed: int
    conns_failed: int

    @property
    def events_per_s(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


# --------------------------------------------------------------------------------------------
# Processes: the server's memory and connections, a process's CPU, sseload
# --------------------------------------------------------------------------------------------


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def server_pids(root: int) -> list[int]:
    """The server's processes: its tree, less the ``uv run`` that wraps it (which only waits).

    One process with ``--workers 1``; the parent and its N workers otherwise.
    """
    procs = append.read_procs()
    return sorted(p for p in append.descendants(procs, root) if procs[p].comm != "uv")


def tree_rss_kib(root: int) -> int:
    """VmRSS summed over the server's processes (read afresh: a worker may be replaced)."""
    total = 0
    for pid in server_pids(root):
        with contextlib.suppress(OSError, RuntimeError):
            total += vm_rss_kib(pid)
    return total


def sockets_per_process(root: int) -> dict[int, int]:
    """Open sockets of each of the server's processes: how the kernel spread the connections."""
    counts: dict[int, int] = {}
    for pid in server_pids(root):
        with contextlib.suppress(OSError):
            counts[pid] = sum(
                1
                for fd in os.scandir(f"/proc/{pid}/fd")
                if _readlink(fd.path).startswith("socket:")
            )
    return counts


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def proc_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


PROGRESS_FIELD = re.compile(r"(\w+)=([\d.]+)")


class SseLoad:
    """One ``sseload`` process; its once-a-second progress lines are followed live."""

    def __init__(
        self,
        binary: Path,
        url: str,
        conns: int,
        *,
        headers: Sequence[str] = (),
        last_event_id: int | None = None,
        stop_after_events: int | None = None,
        duration: float = 3600.0,
        max_connecting: int = 256,
    ) -> None:
        self.cmd = [
            str(binary),
            "--url",
            url,
            "--conns",
            str(conns),
            "--duration",
            f"{duration:g}",
            "--max-connecting",
            str(max_connecting),
            "--progress",
        ]
        for header in headers:
            self.cmd += ["--header", header]
        if last_event_id is not None:
            self.cmd += ["--last-event-id", str(last_event_id)]
        if stop_after_events is not None:
            self.cmd += ["--stop-after-events", str(stop_after_events)]
        self.conns = conns
        self.proc: subprocess.Popen[bytes] | None = None
        self.progress: dict[str, float] = {}
        self.stderr_tail: list[str] = []
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        self._reader = threading.Thread(target=self._follow, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _follow(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            with self._changed:
                if line.startswith("[") and "events=" in line:
                    self.progress = {k: float(v) for k, v in PROGRESS_FIELD.findall(line)}
                else:
                    self.stderr_tail = [*self.stderr_tail[-19:], line]
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _value(self, name: str) -> float:
        return self.progress.get(name, 0.0)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_open(self, timeout: float) -> float:
        """Wait until every connection is open or has failed; the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        with self._changed:
            while self._value("open") + self._value("failed") + self._value("closed") < self.conns:
                if not self.running() or time.monotonic() > deadline:
                    break
                self._changed.wait(0.5)
        return time.monotonic() - started

    def wait_events(self, expected: int, timeout: float, stall: float) -> float:
        """Wait until ``expected`` events arrived, or none arrived for ``stall`` seconds."""
        started = time.monotonic()
        deadline = started + timeout
        last_count, last_change = -1.0, started
        with self._changed:
            while self._value("events") < expected and self.running():
                now = time.monotonic()
                if self._value("events") != last_count:
                    last_count, last_change = self._value("events"), now
                if now > deadline or now - last_change > stall:
                    break
                self._changed.wait(0.5)
        return time.monotonic() - started

    def stop(self, timeout: float = 30.0) -> dict[str, object]:
        """SIGINT (sseload's own clean stop), then its one JSON line."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.result(timeout)

    def result(self, timeout: float) -> dict[str, object]:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        out = self.proc.stdout.read().decode(errors="replace").strip()
        if self._reader is not None:
            self._reader.join(5)
        if not out:
            raise RuntimeError(
                f"sseload printed nothing (exit {self.proc.returncode}): "
                + " | ".join(self.stderr_tail)
            )
        result: dict[str, object] = json.loads(out.splitlines()[-1])
        return result


def find_sseload(directory: Path, workdir: Path) -> Path:
    """The sseload binary of ``directory``, or one built from its source in ``workdir``."""
    binary = directory / "sseload"
    if binary.is_file() and os.access(binary, os.X_OK):
        done = subprocess.run([str(binary), "--help"], capture_output=True, check=False)
        if b"usage" in done.stdout + done.stderr:
            return binary
    build = workdir / "sseload"
    shutil.copytree(directory, build)
    for name in build.iterdir():
        name.chmod(0o755 if name.name == "sseload" else 0o644)
    done = subprocess.run(["make", "-C", str(build)], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"could not build sseload in {build}: {done.stderr}")
    return build / "sseload"


def int_of(result: Mapping[str, object], key: str) -> int:
    return int(float(str(result.get(key, 0))))


def float_of(result: Mapping[str, object], key: str) -> float:
    return float(str(result.get(key, 0.0)))


# --------------------------------------------------------------------------------------------
# The two servers
# --------------------------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    pg: append.Pg
    env: dict[str, str]
    token: str
    sseload: Path
    workdir: Path
    postmaster_pid: int | None
    foreign_markers: list[str]
    tasks_ready: bool = False
    keep_workdir: bool = False
    replay_from: int | None = None


class Target:
    """A started server: where to connect, how to publish, whose memory and CPU to read."""

    def __init__(self, ctx: Context, kind: str) -> None:
        self.ctx = ctx
        self.kind = kind
        self.host = "127.0.0.1"
        self.port = append.free_port()
        self.server: append.Server | None = None

    @property
    def stream_url(self) -> str:
        path = "/v1/stream" if self.kind == "taskstream" else "/events"
        return f"http://{self.host}:{self.port}{path}"

    @property
    def stream_headers(self) -> list[str]:
        if self.kind == "taskstream":
            return [f"Authorization: Bearer {self.ctx.token}"]
        return []

    def start(self) -> None:
        args = self.ctx.args
        log = self.ctx.workdir / f"{self.kind}-{self.port}.log"
        if self.kind == "taskstream":
            cmd = args.server_cmd.format(host=self.host, port=self.port, workers=args.workers)
            if args.server_args:
                cmd += " " + args.server_args
            self.server = append.Server(shlex.split(cmd), self.ctx.env, log)
            self.server.start()
            self.server.wait_ready(self.host, self.port, args.ready_timeout)
            setup_taskstream(self.ctx, self.host, self.port)
        else:
            cmd = [
                sys.executable,
                str(BROADCAST_SERVER),
                "--host",
                self.host,
                "--port",
                str(self.port),
                *shlex.split(args.broadcast_args),
                *(["--coalesce"] if self.kind == "coalesced" else []),
            ]
            self.server = append.Server(cmd, self.ctx.env, log)
            self.server.start()
            wait_port(self.server, self.host, self.port, args.ready_timeout)

    @property
    def root(self) -> int:
        assert self.server is not None and self.server.pid is not None
        return self.server.pid

    def rss_kib(self) -> int:
        return tree_rss_kib(self.root)

    def connections(self, baseline: Mapping[int, int]) -> list[int]:
        """Sockets each server process gained since ``baseline``, busiest first (workers only:
        the parent of several workers holds just the listening socket)."""
        now = sockets_per_process(self.root)
        gained = [now[pid] - baseline.get(pid, 0) for pid in now]
        return sorted((n for n in gained if n > 0), reverse=True)

    def stop(self) -> None:
        if self.server is not None:
            code = self.server.stop()
            if code not in (0, None):
                print(f"note: {self.kind} exited with {code}; log: {self.server.log_path}")

    def readiness(self) -> str:
        if self.kind != "taskstream":
            return "n/a"
        try:
            status, body = asyncio.run(httpload.probe(self.host, self.port, "GET", "/readyz"))
        except OSError as exc:
            return repr(exc)
        return f"{status} {body[:200].decode(errors='replace')}"

    def diagnose(self, result: Mapping[str, object], published: int) -> dict[str, object]:
        """When connections were lost or events missing: what the server said about it."""
        closed = int_of(result, "conns_closed") + int_of(result, "conns_failed")
        missing = published * int_of(result, "conns_ok") - int_of(result, "events")
        if not closed and missing <= 0:
            return {}
        found: dict[str, object] = {"readyz_after": self.readiness()}
        if self.server is not None:
            with contextlib.suppress(OSError):
                lines = self.server.log_path.read_text(errors="replace").splitlines()
                found["server_log_tail"] = lines[-30:]
                print(f"  server log kept: {self.server.log_path}", flush=True)
                self.ctx.keep_workdir = True
        return found

    def meter(self) -> append.CpuMeter:
        assert self.server is not None
        return append.CpuMeter(
            self.server.pid, self.ctx.postmaster_pid, self.ctx.foreign_markers, interval=0.5
        )

    def publish_cmd(self, *, rate: float, duration: float, count: int = 0) -> list[str]:
        ctx = self.ctx
        if self.kind == "taskstream":
            url = f"http://{self.host}:{self.port}/v1/tasks/{LIVE_TASK}/events"
            template = TASKSTREAM_TEMPLATE
            headers = ["--header", f"Authorization: Bearer {ctx.token}"]
        else:
            url = f"http://{self.host}:{self.port}/publish"
            template = BROADCAST_TEMPLATE
            headers = []
        return [
            sys.executable,
            str(PUBLISHER),
            "--url",
            url,
            *headers,
            "--template",
            template,
            "--pad",
            str(ctx.args.pad),
            "--rate",
            f"{rate:g}",
            "--duration",
            f"{duration:g}",
            "--count",
            str(count),
        ]


def wait_port(server: append.Server, host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {server.proc.returncode}; see {server.log_path}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def setup_taskstream(ctx: Context, host: str, port: int) -> None:
    """Once per bench database: the running task the live events go to, and the replay's."""
    if ctx.tasks_ready:
        return
    ids = [LIVE_TASK, *REPLAY_TASKS]
    asyncio.run(httpload.create_tasks(host, port, ctx.token, ids))
    body = json.dumps({"type": "started", "data": {"worker": "bench"}}).encode()
    for task_id in ids:
        status, answer = asyncio.run(
            httpload.probe(
                host, port, "POST", f"/v1/tasks/{task_id}/events", token=ctx.token, body=body
            )
        )
        if status not in (200, 201):
            raise RuntimeError(f"starting {task_id}: {status} {answer[:300]!r}")
    ctx.tasks_ready = True


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def publish(
    target: Target, *, rate: float, duration: float, count: int = 0
) -> tuple[dict[str, object], float]:
    """Run the publisher to the end; its summary and its CPU (per cent of one core)."""
    res = append.run_child(
        target.publish_cmd(rate=rate, duration=duration, count=count),
        timeout=duration + 60,
    )
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode or not lines:
        raise RuntimeError(f"ssepublish.py failed ({res.returncode}): {res.stderr[-2000:]}")
    summary: dict[str, object] = json.loads(lines[-1])
    return summary, res.cpu_s / max(res.wall_s, 1e-9) * 100


def warm_up(target: Target) -> None:
    """A few connections and a few events, so that first-use costs are not counted as load."""
    ctx = target.ctx
    client = SseLoad(ctx.sseload, target.stream_url, 10, headers=target.stream_headers)
    client.start()
    try:
        client.wait_open(30)
        publish(target, rate=20, duration=1, count=10)
        client.wait_events(100, timeout=5, stall=2)
    finally:
        client.stop()
    time.sleep(ctx.args.settle)


def live_run(ctx: Context, kind: str, conns: int, repeat: int) -> LiveRun:
    args = ctx.args
    target = Target(ctx, kind)
    target.start()
    client: SseLoad | None = None
    try:
        warm_up(target)
        rss_before = target.rss_kib()
        sockets_before = sockets_per_process(target.root)
        ready_before = target.readiness()
        client = SseLoad(
            ctx.sseload,
            target.stream_url,
            conns,
            headers=target.stream_headers,
            max_connecting=args.max_connecting,
        )
        client.start()
        open_s = client.wait_open(args.open_timeout)
        time.sleep(args.settle)
        rss_open = target.rss_kib()
        spread = target.connections(sockets_before)
        processes = len(server_pids(target.root))
        sseload_ticks = proc_ticks(client.pid)
        started = time.monotonic()
        with target.meter().window() as cpu:
            summary, publisher_cpu = publish(target, rate=args.rate, duration=args.duration)
        window = time.monotonic() - started
        sseload_cpu = (proc_ticks(client.pid) - sseload_ticks) / append.CLK_TCK / window * 100
        published = int_of(summary, "sent")
        expected = published * int(client.progress.get("open", conns))
        drain_s = client.wait_events(expected, timeout=args.drain_timeout, stall=args.drain_stall)
        rss_after = target.rss_kib()
        result = client.stop()
        client = None
        diagnostics = target.diagnose(result, published)
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.stop()
        target.stop()
    return LiveRun(
        server=kind,
        conns=conns,
        repeat=repeat,
        published=published,
        publish_errors=int_of(summary, "errors") + int_of(summary, "unfinished"),
        conns_ok=int_of(result, "conns_ok"),
        conns_failed=int_of(result, "conns_failed"),
        conns_closed=int_of(result, "conns_closed"),
        delivered=int_of(result, "events"),
        per_conn_min=int_of(result, "events_per_conn_min"),
        per_conn_max=int_of(result, "events_per_conn_max"),
        p50_ms=float_of(result, "lat_ms_p50"),
        p99_ms=float_of(result, "lat_ms_p99"),
        p999_ms=float_of(result, "lat_ms_p999"),
        max_ms=float_of(result, "lat_ms_max"),
        window_s=window,
        open_s=open_s,
        drain_s=drain_s,
        server_cpu_pct=cpu[0],
        postgres_cpu_pct=cpu[1],
        busy_pct=cpu[2],
        sseload_cpu_pct=sseload_cpu,
        publisher_cpu_pct=publisher_cpu,
        rss_before_kib=rss_before,
        rss_open_kib=rss_open,
        rss_after_kib=rss_after,
        extra={
            "publish_rtt_ms_p50": summary.get("publish_rtt_ms_p50"),
            "publish_rtt_ms_p99": summary.get("publish_rtt_ms_p99"),
            "late_starts": summary.get("late_starts"),
            "publish_retries": summary.get("retries"),
            "publish_error_messages": summary.get("error_messages"),
            "readyz_before": ready_before,
            "retry_fields": result.get("retry_fields"),
            "comments": result.get("comments"),
            "connect_ms_p99": result.get("connect_ms_p99"),
            "fail_status": result.get("fail_status"),
            "fail_connect": result.get("fail_connect"),
            "status_4xx": result.get("status_4xx"),
            "status_5xx": result.get("status_5xx"),
            "sseload_cpu_pct_whole_run": result.get("client_cpu_pct"),
            "server_processes": processes,
            "connections_per_worker": spread,
            **diagnostics,
        },
    )


def append_history(ctx: Context, host: str, port: int) -> int:
    """Append ``--replay-events`` progress events in batches; the seq just before them."""
    args = ctx.args
    before = int(ctx.pg.psql("SELECT coalesce(max(seq), 0) FROM events"))
    hostport = f"{host}:{port}"

    async def run() -> int:
        conn = await httpload.Connection.open(host, port)
        appended = 0
        try:
            while appended < args.replay_events:
                size = min(args.replay_batch, args.replay_events - appended)
                items = [
                    {
                        "task_id": REPLAY_TASKS[(appended + i) % len(REPLAY_TASKS)],
                        "type": "progress",
                        "data": {"percent": 50, "message": "x" * args.pad},
                    }
                    for i in range(size)
                ]
                body = json.dumps({"events": items}, separators=(",", ":")).encode()
                raw = httpload.build_request(
                    "POST", "/v1/events/batch", host=hostport, token=ctx.token, body=body
                )
                status, answer = await conn.request(raw)
                ok = httpload.count_batch_ok(answer) if status == 200 else 0
                if ok != size:
                    raise RuntimeError(f"batch append: {status}, {ok}/{size} ok: {answer[:300]!r}")
                appended += size
                if conn.closed:
                    conn = await httpload.Connection.open(host, port)
        finally:
            conn.close()
        return appended

    started = time.monotonic()
    appended = asyncio.run(run())
    print(
        f"appended {appended:,} events for the replay in {time.monotonic() - started:.1f} s",
        flush=True,
    )
    after = int(ctx.pg.psql("SELECT coalesce(max(seq), 0) FROM events"))
    if after - before != appended:
        raise RuntimeError(
            f"expected {appended} new events after seq {before}, found {after - before}"
        )
    return before


def replay_run(ctx: Context, repeat: int) -> ReplayRun:
    args = ctx.args
    target = Target(ctx, "taskstream")
    target.start()
    try:
        if ctx.replay_from is None:
            ctx.replay_from = append_history(ctx, target.host, target.port)
            ctx.pg.psql("VACUUM ANALYZE events")
        # Warm-up: a short resume first, so that the measured one does not pay for the pool's
        # first use of the backfill query (statement preparation, type introspection).
        warm = SseLoad(
            ctx.sseload,
            target.stream_url,
            1,
            headers=target.stream_headers,
            last_event_id=ctx.replay_from,
            stop_after_events=min(2000, args.replay_events),
            duration=30,
        )
        warm.start()
        warm.result(60)
        time.sleep(args.settle)
        client = SseLoad(
            ctx.sseload,
            target.stream_url,
            1,
            headers=target.stream_headers,
            last_event_id=ctx.replay_from,
            stop_after_events=args.replay_events,
            duration=args.replay_timeout,
        )
        with target.meter().window() as cpu:
            client.start()
            result = client.result(args.replay_timeout + 30)
    finally:
        target.stop()
    return ReplayRun(
        repeat=repeat,
        expected=args.replay_events,
        delivered=int_of(result, "events"),
        seconds=float_of(result, "duration_s"),
        server_cpu_pct=cpu[0],
        postgres_cpu_pct=cpu[1],
        busy_pct=cpu[2],
        client_cpu_pct=float_of(result, "client_cpu_pct"),
        conns_closed=int_of(result, "conns_closed"),
        conns_failed=int_of(result, "conns_failed"),
    )


def describe_live(m: LiveRun) -> str:
    return (
        f"[{m.repeat + 1}] {m.server} @ {m.conns:,}: p50 {m.p50_ms:.1f} ms, p99 {m.p99_ms:.1f} ms, "
        f"max {m.max_ms:.0f} ms; delivered {m.delivered:,}/{m.expected:,} (per connection "
        f"{m.per_conn_min}-{m.per_conn_max} of {m.published}); failed {m.conns_failed}, closed "
        f"{m.conns_closed}; open in {m.open_s:.1f} s; CPU server {m.server_cpu_pct:.0f} %, "
        f"postgres {m.postgres_cpu_pct:.0f} %, sseload {m.sseload_cpu_pct:.0f} %, publisher "
        f"{m.publisher_cpu_pct:.0f} %, other {m.other_cpu_pct:.0f} %; RSS "
        f"{m.rss_before_kib / 1024:.1f} -> {m.rss_open_kib / 1024:.1f} -> "
        f"{m.rss_after_kib / 1024:.1f} MiB = {m.rss_per_conn_kib:.1f} KiB/connection"
    )


def describe_replay(r: ReplayRun) -> str:
    return (
        f"[{r.repeat + 1}] replay: {r.delivered:,}/{r.expected:,} events in {r.seconds:.2f} s = "
        f"{r.events_per_s:,.0f} events/s; CPU server {r.server_cpu_pct:.0f} %, postgres "
        f"{r.postgres_cpu_pct:.0f} %, client {r.client_cpu_pct:.0f} %"
    )


def run_all(ctx: Context) -> tuple[list[LiveRun], list[ReplayRun]]:
    args = ctx.args
    live: list[LiveRun] = []
    replays: list[ReplayRun] = []
    for repeat in range(args.repeats):
        for conns in args.conns:
            for kind in args.servers:
                m = live_run(ctx, kind, conns, repeat)
                live.append(m)
                print(describe_live(m), flush=True)
        if args.replay_events > 0:
            r = replay_run(ctx, repeat)
            replays.append(r)
            print(describe_replay(r), flush=True)
    return live, replays


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def group(live: Sequence[LiveRun], kind: str, conns: int) -> list[LiveRun]:
    return [m for m in live if m.server == kind and m.conns == conns]


def med(runs: Sequence[LiveRun], attr: str) -> float:
    return median([float(getattr(m, attr)) for m in runs])


def pct(x: float) -> str:
    return f"{x:.0f} %"


def render_table(
    live: Sequence[LiveRun], replays: Sequence[ReplayRun], args: argparse.Namespace
) -> str:
    rows = [
        "| server | connections | p50 ms | p99 ms | max ms | delivered / expected "
        "| failed / closed connections | deliveries/s | server CPU | Postgres CPU | sseload CPU "
        "| other CPU | RSS before → with N open | RSS per connection |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for conns in args.conns:
        for kind in args.servers:
            runs = group(live, kind, conns)
            if not runs:
                continue
            delivered = sum(m.delivered for m in runs)
            expected = sum(m.expected for m in runs)
            lo, hi = min(m.p99_ms for m in runs), max(m.p99_ms for m in runs)
            spread = f" ({fmt_ms(lo)}-{fmt_ms(hi)})" if len(runs) > 1 else ""
            rows.append(
                f"| {SERVER_LABELS[kind]} | {conns:,} | {fmt_ms(med(runs, 'p50_ms'))} "
                f"| {fmt_ms(med(runs, 'p99_ms'))}{spread} | {med(runs, 'max_ms'):,.0f} "
                f"| {delivered:,} / {expected:,} "
                f"| {sum(m.conns_failed for m in runs)} / {sum(m.conns_closed for m in runs)} "
                f"| {med(runs, 'deliveries_per_s'):,.0f} | {pct(med(runs, 'server_cpu_pct'))} "
                f"| {pct(med(runs, 'postgres_cpu_pct'))} | {pct(med(runs, 'sseload_cpu_pct'))} "
                f"| {pct(med(runs, 'other_cpu_pct'))} "
                f"| {med(runs, 'rss_before_kib') / 1024:.0f} → "
                f"{max(med(runs, 'rss_open_kib'), med(runs, 'rss_after_kib')) / 1024:.0f} MiB "
                f"| {med(runs, 'rss_per_conn_kib'):.1f} KiB |"
            )
    if replays:
        delivered = sum(r.delivered for r in replays)
        expected = sum(r.expected for r in replays)
        rate = median([r.events_per_s for r in replays])
        lo, hi = min(r.events_per_s for r in replays), max(r.events_per_s for r in replays)
        spread = f" ({lo:,.0f}-{hi:,.0f})" if len(replays) > 1 else ""
        rows.append(
            f"| taskstream, replay of {args.replay_events:,} events to one resuming client "
            f"| 1 | — | — | — | {delivered:,} / {expected:,} "
            f"| {sum(r.conns_failed for r in replays)} / {sum(r.conns_closed for r in replays)} "
            f"| **{rate:,.0f}**{spread} | {pct(median([r.server_cpu_pct for r in replays]))} "
            f"| {pct(median([r.postgres_cpu_pct for r in replays]))} "
            f"| {pct(median([r.client_cpu_pct for r in replays]))} | | | |"
        )
    return "\n".join(rows)


def fmt_ms(x: float) -> str:
    return append.fmt_ms(x)


def render_targets(live: Sequence[LiveRun], replays: Sequence[ReplayRun]) -> str:
    lines = ["| target | measured | ratio | |", "|---|---|--:|---|"]
    verdict = append.verdict
    ours = group(live, "taskstream", TARGET_RSS_CONNS)
    if ours:
        value = med(ours, "rss_per_conn_kib")
        all_open = min(m.conns_ok for m in ours) >= TARGET_RSS_CONNS
        lines.append(
            f"| {TARGET_RSS_CONNS:,} connections at ≤ {TARGET_RSS_KIB:g} KiB RSS each "
            f"| {value:.1f} KiB per connection | {value / TARGET_RSS_KIB:.2f}x of the limit "
            f"| {verdict(value <= TARGET_RSS_KIB and all_open)} |"
        )
    for conns, limit in TARGET_P99_MS.items():
        ours = group(live, "taskstream", conns)
        if ours:
            value = med(ours, "p99_ms")
            lost = sum(m.shortfall for m in ours)
            lines.append(
                f"| p99 < {limit:g} ms at {conns:,} connections x 10 events/s "
                f"| p99 {fmt_ms(value)} ms (p50 {fmt_ms(med(ours, 'p50_ms'))} ms) "
                f"| {value / limit:.2f}x of the limit | {verdict(value < limit and lost == 0)} |"
            )
    if replays:
        value = median([r.events_per_s for r in replays])
        lines.append(
            f"| replay ≥ {TARGET_REPLAY:,.0f} events/s to one resuming client "
            f"| {value:,.0f} events/s | {value / TARGET_REPLAY:.2f}x "
            f"| {verdict(value >= TARGET_REPLAY)} |"
        )
    ours = [m for m in live if m.server == "taskstream"]
    if ours:
        lost = sum(m.shortfall for m in ours)
        closed = sum(m.conns_closed + m.conns_failed for m in ours)
        lines.append(
            "| every connection receives every event (all runs) "
            f"| {sum(m.delivered for m in ours):,} of {sum(m.expected for m in ours):,} "
            f"delivered; {closed} connections failed or closed | "
            f"| {verdict(lost == 0 and closed == 0)} |"
        )
    for conns, kind in [(n, k) for n in sorted({m.conns for m in live}) for k in SERVERS[1:]]:
        ours, ceiling = group(live, "taskstream", conns), group(live, kind, conns)
        if ours and ceiling:
            lines.append(
                f"| (context) taskstream vs {SERVER_LABELS[kind]} at {conns:,} "
                f"| p99 {fmt_ms(med(ours, 'p99_ms'))} vs {fmt_ms(med(ceiling, 'p99_ms'))} ms; "
                f"{med(ours, 'rss_per_conn_kib'):.1f} vs {med(ceiling, 'rss_per_conn_kib'):.1f} "
                f"KiB/connection; server CPU {pct(med(ours, 'server_cpu_pct'))} vs "
                f"{pct(med(ceiling, 'server_cpu_pct'))} "
                f"| {med(ours, 'server_cpu_pct') / max(med(ceiling, 'server_cpu_pct'), 1e-9):.2f}x "
                "CPU | |"
            )
    return "\n".join(lines)


def render_notes(live: Sequence[LiveRun], replays: Sequence[ReplayRun]) -> list[str]:
    notes: list[str] = []
    for m in live:
        problems = []
        if m.shortfall:
            problems.append(f"{m.shortfall:,} deliveries missing")
        if m.conns_failed or m.conns_closed:
            problems.append(f"{m.conns_failed} connections failed, {m.conns_closed} closed")
        if m.publish_errors:
            problems.append(f"{m.publish_errors} publishes failed")
        if problems:
            notes.append(
                f"- {SERVER_LABELS[m.server]} @ {m.conns:,}, repetition {m.repeat + 1}: "
                + "; ".join(problems)
                + f" (per connection {m.per_conn_min}-{m.per_conn_max} of {m.published} events)."
            )
    for r in replays:
        if r.delivered < r.expected:
            notes.append(
                f"- Replay, repetition {r.repeat + 1}: {r.delivered:,} of {r.expected:,} events."
            )
    spread = spread_note(live)
    if spread:
        notes.append(spread)
    if live:
        heaviest = max(m.sseload_cpu_pct for m in live)
        notes.append(
            f"- sseload used at most {heaviest:.0f} % of a core during a window and the "
            f"publisher at most {max(m.publisher_cpu_pct for m in live):.0f} %: the client side "
            "was not the bottleneck"
            + (
                "."
                if heaviest < 70
                else " — except where sseload neared a full core; read those rows with care."
            )
        )
        rtt = [
            float(str(m.extra.get("publish_rtt_ms_p99") or 0))
            for m in live
            if m.server == "taskstream"
        ]
        if rtt:
            notes.append(
                "- The latency counts from each event's scheduled publish time, so it includes "
                f"the append request itself (taskstream's append round trip p99, median over runs: "
                f"{median(rtt):.1f} ms)."
            )
    return notes


def worker_connections(m: LiveRun) -> list[int]:
    """Connections each worker held (busiest first); empty for a one-process server."""
    counts = m.extra.get("connections_per_worker") or []
    return [int(n) for n in counts] if isinstance(counts, list) and len(counts) > 1 else []


def spread_note(live: Sequence[LiveRun]) -> str:
    """How the kernel spread the connections over the workers, when there were several."""
    parts = []
    for conns in sorted({m.conns for m in live}):
        runs = [m for m in group(live, "taskstream", conns) if worker_connections(m)]
        if runs:
            shares = ", ".join(" / ".join(f"{n:,}" for n in worker_connections(m)) for m in runs)
            parts.append(f"{conns:,}: {shares}")
    if not parts:
        return ""
    return (
        "- Connections per worker (counted as each worker's new sockets once all were open; "
        "one entry per repetition): " + "; ".join(parts) + "."
    )


def render_report(
    live: Sequence[LiveRun],
    replays: Sequence[ReplayRun],
    args: argparse.Namespace,
    info: Mapping[str, str],
) -> str:
    server = args.server_cmd.format(host="127.0.0.1", port="PORT", workers=args.workers)
    if args.server_args:
        server += " " + args.server_args
    lines = [
        f"Command: `{info['command']}`",
        "",
        f"- Date: {info['date']}" + (f"; code: commit {info['code']}" if info.get("code") else ""),
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, {info['os']}; "
        f"{info.get('pg_version', 'PostgreSQL ?')}; Python {info['python']}; RLIMIT_NOFILE "
        f"{info.get('nofile', '?')}",
        f"- taskstream: `{server}` with TASKSTREAM_MAX_STREAMS_PER_SUBJECT="
        f"{args.max_streams}; clients on `GET /v1/stream` (bearer token, no resume position); "
        f"events appended with `POST /v1/tasks/{{id}}/events` (one `progress` event per request "
        "on a running task)."
        + (
            f" Broadcast ceiling: `bench/broadcast_server.py` {args.broadcast_args}".rstrip()
            + ", same client, `POST /publish` (one loop of `transport.write` per event, the "
            "issue's design); `--coalesce`: the events of all POSTs read in one loop iteration "
            "go out together, one write per connection, as taskstream's listener does with the "
            "rows of one read."
            if set(args.servers) - {"taskstream"}
            else " The broadcast ceiling was not run."
        ),
        f"- Load: sseload ({info.get('sseload', 'sseload')}) opens N connections from one "
        f"process; `bench/ssepublish.py` sends {args.rate:g} events/s for {args.duration:g} s "
        f"(open loop like sseload's `publish.py`, but it replaces keep-alive connections that "
        "uvicorn closed while idle instead of failing on them; each event's data holds "
        f"{args.pad} bytes of message and `sent_ns`); latency is "
        "sseload's, from the scheduled publish time to the client's receipt. Each server "
        "is started fresh for each measurement and warmed up (10 connections, 10 events). "
        f"{args.repeats} repetition(s), interleaved; medians shown (p99 range in brackets), "
        "deliveries and failures summed over the repetitions.",
        "- CPU is per cent of one core (the machine has "
        f"{int(info['nproc']) * 100} %) during the publishing window: the server's process tree, "
        "Postgres (the bench database's backends and the shared background processes), sseload, "
        "and the rest of the machine (*other*: other processes and softirqs of loopback TCP; "
        "the publisher, a few per cent, is left out of it). Before the run the machine was "
        f"{info.get('idle_busy', '?')} busy"
        + (f"; {info['waited']}" if info.get("waited") else "")
        + ".",
        "- RSS per connection: (VmRSS with N open, after the window - VmRSS after the warm-up, "
        "before the connections) / N, VmRSS summed over the server's processes"
        + (
            f" (the parent and its {args.workers} workers; every worker is a separate "
            "interpreter, so nothing is counted twice but the shared libraries' pages)"
            if args.workers > 1
            else " (one)"
        )
        + ".",
        (
            f"- Replay: {args.replay_events:,} progress events appended through `POST "
            f"/v1/events/batch` ({args.replay_batch} per request), then one sseload connection "
            "with `Last-Event-ID` set just before them and `--stop-after-events` (after a "
            "warm-up resume of 2,000 of them on the same fresh server); events/s is sseload's "
            "count over its run (connect included)."
            if replays
            else "- Replay: not measured in this run."
        ),
        "",
        render_table(live, replays, args),
        "",
        render_targets(live, replays),
        "",
        *render_notes(live, replays),
    ]
    return "\n".join(lines).rstrip() + "\n"


SECTION_TEXT = f"""{SECTION_TITLE}

`bench/fanout.py` (`make bench-fanout`; `make bench` runs it after the append benchmark)
measures the live path of the Streams section on one process: how many SSE connections one
`taskstream serve --workers 1` holds, how late an appended event reaches each of them, and
what a connection costs in memory — next to `bench/broadcast_server.py`, a bare asyncio
server that does only the fan-out (one `transport.write` of the same pre-framed bytes per
connection), the ceiling for Python on this machine. The ceiling runs twice: as the issue
designed it (one loop of writes per published event) and with `--coalesce` (the events that
arrived during one event-loop iteration are written together, one write per connection — what
taskstream's listener does with the rows of one read, and what keeps a saturated server's
latency bounded).

- **Live fan-out**: N concurrent `GET /v1/stream` connections held by one sseload process
  (`../shared/tools/sseload`, C, epoll), 10 `progress` events/s appended through the real
  append API, each delivered to every connection. Latency runs from the event's scheduled
  publish time (stamped into its data as `sent_ns`) to its arrival at the client, so it
  includes the append itself, the group commit, the NOTIFY wake-up, the listener's read of
  the table and the fan-out. *Delivered / expected* checks that every connection got every
  acknowledged event.
- **Memory**: the server's VmRSS after a warm-up and again with N connections open; the
  difference divided by N. With `--workers N` the VmRSS of the parent and every worker is
  summed, and so is their CPU.
- **Replay**: one client resumes with `Last-Event-ID` before 100,000 stored events; the rate
  at which they arrive is the backfill path (keyset reads of the table, frames built from the
  stored JSON text).
- Run it on a quiet machine: `uv run python bench/fanout.py --wait-quiet 1200` (about 20
  minutes; `--quick` for a smoke run that leaves this file alone, `--conns 1000 5000`,
  `--servers`, `--repeats`, `--duration`, `--workers N`, `--no-docs`, `--json FILE`,
  `--code GIT_REF` to measure a commit rather than a working tree that is being edited).

### Latest fan-out results
"""


def write_docs(path: Path, report: str) -> None:
    """Replace the generated block, or add the section (and the block) at the end."""
    append.replace_block(path, report, begin=BEGIN_MARK, end=END_MARK, section=SECTION_TEXT)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark taskstream's SSE fan-out against a pure-asyncio broadcast server.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 200 and 1,000 connections, 4 s, 1 repetition, 20,000 replayed events, "
        "docs untouched",
    )
    p.add_argument(
        "--conns", type=int, nargs="+", default=[1_000, 5_000, 10_000], help="connection counts"
    )
    p.add_argument("--duration", type=float, default=20.0, help="seconds of publishing per run")
    p.add_argument("--repeats", type=int, default=3, help="repetitions (medians are reported)")
    p.add_argument("--rate", type=float, default=10.0, help="events published per second")
    p.add_argument("--pad", type=int, default=64, help="bytes of message in each event's data")
    p.add_argument(
        "--servers",
        nargs="+",
        choices=SERVERS,
        default=list(SERVERS),
        help="which servers to measure",
    )
    p.add_argument(
        "--replay-events",
        type=int,
        default=None,
        help="events to replay, 0 to skip the replay (default 100,000; 20,000 with --quick)",
    )
    p.add_argument("--replay-batch", type=int, default=1000, help="events per batch request")
    p.add_argument("--replay-timeout", type=float, default=120.0)
    p.add_argument(
        "--max-streams", type=int, default=20_000, help="TASKSTREAM_MAX_STREAMS_PER_SUBJECT"
    )
    p.add_argument("--max-connecting", type=int, default=256, help="sseload --max-connecting")
    p.add_argument(
        "--open-timeout", type=float, default=120.0, help="seconds to open N connections"
    )
    p.add_argument("--settle", type=float, default=1.0, help="seconds of rest at each step")
    p.add_argument(
        "--drain-timeout", type=float, default=30.0, help="seconds to wait for late deliveries"
    )
    p.add_argument(
        "--drain-stall", type=float, default=4.0, help="give up once nothing arrived this long"
    )
    p.add_argument(
        "--sseload-dir",
        type=Path,
        default=Path(os.environ.get("SSELOAD_DIR", DEFAULT_SSELOAD_DIR)),
        help="sseload's folder; the binary is built into a scratch folder if it does not run",
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/"),
        help="server to use (its database part is ignored)",
    )
    p.add_argument(
        "--database",
        default="taskstream_fanout_bench",
        help="bench database: DROPPED and recreated",
    )
    p.add_argument("--keep-database", action="store_true")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="taskstream serve --workers: the connections are spread over them by the kernel",
    )
    p.add_argument(
        "--server-cmd",
        default="uv run taskstream serve --host {host} --port {port} --workers {workers}",
        help="how to start the service",
    )
    p.add_argument("--server-args", default="--no-access-log", help="extra arguments for it")
    p.add_argument("--broadcast-args", default="", help="extra arguments for broadcast_server.py")
    p.add_argument(
        "--migrate-cmd", default="uv run taskstream migrate", help="how to apply migrations"
    )
    p.add_argument(
        "--code",
        default=None,
        metavar="GIT_REF",
        help="measure this commit (a `git archive` of it put first on PYTHONPATH for the server "
        "and the migrations) instead of the working tree, which may be mid-edit",
    )
    p.add_argument("--ready-timeout", type=float, default=90.0)
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="wait up to this many seconds for no bench/append.py and a quiet machine first",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown file to update (default {DOCS.relative_to(ROOT)}, none with --quick)",
    )
    p.add_argument("--no-docs", action="store_true", help="do not write the markdown file")
    p.add_argument("--json", type=Path, default=None, help="also write every run as JSON here")
    p.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="do not measure: print the report of a run saved with --json",
    )
    p.add_argument(
        "--from-json-write",
        action="store_true",
        help="with --from-json: also write the report into the markdown file",
    )
    args = p.parse_args(argv)
    if args.quick:
        if args.conns == p.get_default("conns"):
            args.conns = [200, 1_000]
        args.duration = min(args.duration, 4.0)
        args.repeats = 1

        args.settle = min(args.settle, 0.5)
    if args.replay_events is None:
        args.replay_events = 20_000 if args.quick else 100_000
    if args.no_docs:
        args.output = None
    elif args.output is None and not args.quick:
        args.output = DOCS
    return args


def raise_nofile(needed: int) -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if hard != resource.RLIM_INFINITY and hard < needed:
        print(
            f"warning: RLIMIT_NOFILE hard limit {hard} < {needed} needed for the largest "
            "connection count (raise it with ulimit -Hn as root)",
            flush=True,
        )
    return str(soft)


def other_benchmarks() -> list[str]:
    """Other benchmark processes on this machine (``bench/append.py``, another fanout run)."""
    procs = append.read_procs()
    mine = {os.getpid()}
    pid = os.getpid()
    while pid in procs and procs[pid].ppid not in mine and procs[pid].ppid > 1:
        pid = procs[pid].ppid  # `uv run` and `make` above this process
        mine.add(pid)
    mine |= append.descendants(procs, os.getpid())
    found = []
    for pid in map(str, procs):
        if int(pid) in mine:
            continue
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "bench/append.py" in cmd or ("bench/fanout.py" in cmd and "python" in cmd):
                found.append(f"{pid}: {cmd.strip()[:80]}")
    return found


def wait_for_quiet(max_wait: float) -> str:
    """Wait (up to ``max_wait`` s) until no other benchmark runs and the load average < 1."""
    deadline = time.monotonic() + max_wait
    said = 0.0
    while True:
        others = other_benchmarks()
        load = os.getloadavg()[0]
        if not others and load < 1.0:
            return ""
        if time.monotonic() >= deadline:
            return (
                f"not quiet after waiting {max_wait:.0f} s (load average {load:.2f}"
                + (f"; another benchmark running: {others[0]}" if others else "")
                + "), measured anyway"
            )
        if time.monotonic() - said > 60:
            print(
                f"waiting for a quiet machine: load average {load:.2f}"
                + (f", other benchmark: {others[0]}" if others else ""),
                flush=True,
            )
            said = time.monotonic()
        time.sleep(5)


def git_describe(ref: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h %cI", ref],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"--code {ref}: {done.stderr.strip()}")
    return done.stdout.strip()


def export_code(ref: str, workdir: Path) -> Path:
    """``git archive`` of ``ref`` into ``workdir/code``: a fixed tree to run the server from."""
    target = workdir / "code"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "service", "migrations"],
        capture_output=True,
        check=False,
    )
    if archive.returncode:
        raise SystemExit(f"git archive {ref}: {archive.stderr.decode(errors='replace')}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def describe_run(args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, str]:
    info = append.machine()
    info["command"] = "uv run python bench/fanout.py" + (
        " " + shlex.join(sys.argv[1:]) if argv is None and sys.argv[1:] else ""
    )
    if args.code:
        info["code"] = git_describe(args.code) + " (a `git archive` of it, not the working tree)"
    elif code := append.working_tree_code():
        info["code"] = code
    if args.wait_quiet > 0:
        waited = wait_for_quiet(args.wait_quiet)
        if waited:
            info["waited"] = waited
            print(f"warning: {waited}", flush=True)
    info["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    busy = append.busy_percent(2.0)
    info["idle_busy"] = f"{busy:.0f} %"
    if busy > 20:
        print(
            f"warning: the machine is already {busy:.0f} % busy; results will be noisy", flush=True
        )
    return info


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        for name, value in saved.get("args", {}).items():
            setattr(args, name, value)
        live = [LiveRun(**m) for m in saved["live"]]
        replays = [ReplayRun(**r) for r in saved["replays"]]
        emit(args, saved["info"], live, replays)
        return 0
    append.stop_cleanly_on_sigterm()
    pg = append.Pg.from_url(args.database_url, args.database)
    lock = append.claim_database(pg)
    nofile = raise_nofile(max(args.conns) + 1024)
    info = describe_run(args, argv)
    info["nofile"] = nofile
    workdir = Path(tempfile.mkdtemp(prefix="taskstream-fanout-"))
    sseload = find_sseload(args.sseload_dir, workdir)
    info["sseload"] = str(sseload)
    print(f"bench database {pg.database!r} on {pg.host}:{pg.port}: recreating", flush=True)
    pg.recreate()
    info["pg_version"] = "PostgreSQL " + pg.psql("SHOW server_version")
    secret = secrets.token_hex(32)
    env = dict(os.environ)
    env.update(
        TASKSTREAM_DATABASE_URL=pg.url(),
        TASKSTREAM_JWT_SECRET=secret,
        TASKSTREAM_MAX_STREAMS_PER_SUBJECT=str(args.max_streams),
    )
    if args.code:
        code = export_code(args.code, workdir)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
        sys.path.insert(0, str(code))  # the token is minted by that code too
    from service.tokens import mint

    token = mint(
        secret,
        sub="bench",
        tenant=TENANT,
        scopes="tasks:read tasks:write events:read",
        ttl_seconds=24 * 3600,
    )
    ctx = Context(
        args,
        pg,
        env,
        token,
        sseload,
        workdir,
        pg.postmaster_pid(),
        pg.foreign_markers(),
    )
    try:
        migrate_args = argparse.Namespace(migrate_cmd=args.migrate_cmd)
        append.migrate(migrate_args, env)
        live, replays = run_all(ctx)
    finally:
        if not args.keep_database:
            with contextlib.suppress(RuntimeError):
                pg.drop()
    emit(args, info, live, replays)
    if ctx.keep_workdir:
        print(f"kept {workdir} (server logs of runs with lost connections or events)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    lock.close()
    return 0


SAVED_ARGS = (
    *("conns", "duration", "repeats", "rate", "pad", "servers", "replay_events"),
    *("replay_batch", "max_streams", "server_cmd", "server_args", "broadcast_args", "code"),
    "workers",
)


def emit(
    args: argparse.Namespace,
    info: Mapping[str, str],
    live: Sequence[LiveRun],
    replays: Sequence[ReplayRun],
) -> None:
    report = render_report(live, replays, args, info)
    print()
    print(report)
    if args.json and not args.from_json:
        args.json.write_text(
            json.dumps(
                {
                    "info": info,
                    "args": {name: getattr(args, name) for name in SAVED_ARGS},
                    "live": [asdict(m) for m in live],
                    "replays": [asdict(r) for r in replays],
                },
                indent=2,
            )
        )
    if args.output and (not args.from_json or args.from_json_write):
        write_docs(args.output, report)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
