"""Append throughput and latency of taskstream, next to the raw-Postgres ceiling (``make bench``).

One run, on one machine, against one freshly created database:

1. drops and recreates the bench database, applies the migrations (``taskstream migrate``) and
   creates a scratch table ``raw_events`` for pgbench;
2. starts ``taskstream serve --workers N`` and waits for ``/readyz``;
3. mints a token, creates the tasks the load is spread over;
4. repeats ``--repeats`` times, interleaved so that drift hits every scenario alike:

   * pgbench ``-M prepared``, 32 clients: one statement taking the advisory lock, inserting one
     row and notifying (one event per transaction); and 100-row transactions with the lock and
     one notify — the ceiling a service without group commit could reach;
   * single appends (``POST /v1/tasks/{id}/events``) at 1, 8 and 32 concurrent connections,
     closed loop, with ``wrk`` and a Lua script (or a Python multi-process client without wrk);
   * the batch endpoint, 100 events per request;
   * single appends at a fixed offered rate (open loop, 1,000/s by default), latency measured
     from each request's scheduled time;

5. prints the medians as a markdown table and writes them into ``docs/performance.md``.

For every measurement the CPU used by the load generator, the service's processes and Postgres
is recorded (per cent of one core; the machine has ``nproc`` x 100 %), so a saturated client or
an idle server is visible in the results rather than hidden in them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import fcntl
import functools
import json
import os
import platform
import re
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
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import httpload

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DOCS = ROOT / "docs" / "performance.md"
WRK_SCRIPT = BENCH_DIR / "wrk" / "append.lua"
PGBENCH_DIR = BENCH_DIR / "pgbench"
TENANT = "bench"
PROTECTED_DATABASES = {"test", "postgres", "template0", "template1"}
BEGIN_MARK = "<!-- BEGIN bench/append.py results (generated; edit the text around it) -->"
END_MARK = "<!-- END bench/append.py results -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")

TARGET_SINGLE_RATIO = 1.5
TARGET_BATCH_EVENTS = 50_000.0
TARGET_PACED_P99_MS = 25.0


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """One scenario, one repetition."""

    key: str
    label: str
    clients: str
    events_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    loadgen_cpu_pct: float
    service_cpu_pct: float
    postgres_cpu_pct: float
    busy_pct: float
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def service_us_per_event(self) -> float:
        """Service CPU time per appended event (microseconds): robust against a busy machine."""
        return self.service_cpu_pct * 1e4 / self.events_per_s if self.events_per_s else 0.0

    @property
    def postgres_us_per_event(self) -> float:
        return self.postgres_cpu_pct * 1e4 / self.events_per_s if self.events_per_s else 0.0

    @property
    def events_per_commit(self) -> float:
        """Average group size: appended events per committed transaction (pgbench: fixed)."""
        if "events_per_tx" in self.extra:
            return float(str(self.extra["events_per_tx"]))
        commits = int(str(self.extra.get("commits", 0)))
        return int(str(self.extra.get("ok", 0))) / commits if commits else 0.0

    @property
    def other_cpu_pct(self) -> float:
        """Busy time not accounted to the three: other processes, interrupts, softirqs."""
        return max(
            0.0,
            self.busy_pct - self.loadgen_cpu_pct - self.service_cpu_pct - self.postgres_cpu_pct,
        )


@dataclass
class Summary:
    """Medians over the repetitions of one scenario."""

    key: str
    label: str
    clients: str
    runs: list[Measurement]

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(m, attr) for m in self.runs))

    def spread(self, attr: str) -> tuple[float, float]:
        values = [float(getattr(m, attr)) for m in self.runs]
        return min(values), max(values)


# --------------------------------------------------------------------------------------------
# CPU accounting from /proc
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    ppid: int
    ticks: int  # utime + stime of the process itself (children are sampled on their own)


def read_procs() -> dict[int, ProcStat]:
    procs: dict[int, ProcStat] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is the state (stat field 3); utime and stime are fields 14 and 15
        procs[int(entry)] = ProcStat(
            int(entry), comm, int(fields[1]), int(fields[11]) + int(fields[12])
        )
    return procs


def descendants(procs: Mapping[int, ProcStat], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    found = {root} if root in procs else set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def system_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


class CpuMeter:
    """CPU time of the service's processes and of this database's Postgres processes.

    While a measurement runs, a thread samples ``/proc`` every ``interval`` seconds and keeps,
    per process, the first and the last CPU time seen; a process's share is the difference
    (from 0 if it started during the window). Sampling rather than two snapshots is what lets
    short-lived processes count — pgbench's backends exit before its results are read — and
    it lets backends of *other* databases on the same Postgres (other people's tests) be left
    out, which a postmaster-wide total could not. What a process uses in its last interval
    before exiting is lost; the interval is small against the measurement.
    """

    def __init__(
        self,
        server_pid: int | None,
        postmaster_pid: int | None,
        foreign_markers: Sequence[str] = (),
        interval: float = 0.2,
    ) -> None:
        self.server_pid = server_pid
        self.postmaster_pid = postmaster_pid
        self.foreign_markers = tuple(foreign_markers)
        self.interval = interval
        self._foreign: dict[int, bool] = {}

    def _is_foreign(self, pid: int) -> bool:
        """A backend of another database, told by its process title ``… user db host …``."""
        if pid not in self._foreign:
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                title = ""
            self._foreign[pid] = any(m in title for m in self.foreign_markers)
        return self._foreign[pid]

    def _sample(self) -> tuple[dict[int, int], dict[int, int]]:
        procs = read_procs()
        service: dict[int, int] = {}
        postgres: dict[int, int] = {}
        if self.server_pid is not None:
            service = {p: procs[p].ticks for p in descendants(procs, self.server_pid)}
        if self.postmaster_pid is not None:
            members = descendants(procs, self.postmaster_pid)
        else:  # every Postgres on the machine
            members = {p.pid for p in procs.values() if p.comm == "postgres"}
        postgres = {p: procs[p].ticks for p in members if not self._is_foreign(p)}
        return service, postgres

    @contextlib.contextmanager
    def window(self) -> Iterator[list[float]]:
        """Yields a list filled with (service %, postgres %, machine busy %) of one core."""
        out: list[float] = []
        first: list[dict[int, int]] = [{}, {}]
        last: list[dict[int, int]] = [{}, {}]
        stop = threading.Event()

        def record(initial: bool) -> None:
            for group, ticks in enumerate(self._sample()):
                for pid, value in ticks.items():
                    first[group].setdefault(pid, value if initial else 0)
                    last[group][pid] = value

        def sampler() -> None:
            while not stop.wait(self.interval):
                record(False)

        record(True)
        busy0, total0 = system_ticks()
        started = time.monotonic()
        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        try:
            yield out
        finally:
            stop.set()
            thread.join()
            record(False)
            wall = max(time.monotonic() - started, 1e-9)
            busy1, total1 = system_ticks()
            ncpu = os.cpu_count() or 1
            for group in range(2):
                used = sum(last[group][p] - first[group][p] for p in last[group])
                out.append(used / CLK_TCK / wall * 100)
            out.append((busy1 - busy0) / max(total1 - total0, 1) * 100 * ncpu)


class NotifyCounter:
    """Counts the service's NOTIFYs — one per committed group — to report events per commit.

    Runs an asyncpg LISTEN connection on its own event loop in a background thread.
    """

    def __init__(self, dsn: str, channel: str) -> None:
        self.dsn = dsn
        self.channel = channel
        self.count = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._conn: object | None = None

    def start(self) -> None:
        import asyncpg

        self._thread.start()

        async def listen() -> object:
            conn = await asyncpg.connect(self.dsn)
            await conn.add_listener(self.channel, self._notified)
            return conn

        self._conn = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)

    def _notified(self, *_: object) -> None:
        self.count += 1

    def read(self) -> int:
        """The count once every notification sent so far has arrived."""
        time.sleep(0.3)
        return self.count

    def stop(self) -> None:
        if self._conn is not None:
            asyncio.run_coroutine_threadsafe(self._conn.close(), self._loop).result(10)  # type: ignore[attr-defined]
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@dataclass
class ChildResult:
    stdout: str
    stderr: str
    returncode: int
    cpu_s: float
    wall_s: float


def run_child(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600.0,
) -> ChildResult:
    """Run a load-generator process and return its output and the CPU time it used."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildResult(
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            proc.returncode,
            usage.ru_utime + usage.ru_stime,
            wall,
        )


# --------------------------------------------------------------------------------------------
# Postgres
# --------------------------------------------------------------------------------------------


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Pg:
    """libpq settings for psql/pgbench, and the URL the service gets."""

    host: str
    port: int
    user: str
    password: str | None
    database: str

    @classmethod
    def from_url(cls, url: str, database: str) -> Pg:
        parts = urllib.parse.urlsplit(url)
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 5432,
            urllib.parse.unquote(parts.username or "postgres"),
            urllib.parse.unquote(parts.password) if parts.password else None,
            database,
        )

    def env(self, database: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PGHOST=self.host,
            PGPORT=str(self.port),
            PGUSER=self.user,
            PGDATABASE=database or self.database,
        )
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def url(self) -> str:
        auth = urllib.parse.quote(self.user, safe="")
        if self.password:
            auth += ":" + urllib.parse.quote(self.password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{self.database}"

    def psql(self, sql: str, *, database: str | None = None) -> str:
        done = subprocess.run(
            ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
            env=self.env(database),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"psql failed: {sql[:80]}…: {done.stderr.strip()}")
        return done.stdout.strip()

    def psql_file(self, path: Path) -> None:
        done = subprocess.run(
            ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(path)],
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"psql -f {path} failed: {done.stderr.strip()}")

    def recreate(self) -> None:
        if self.database in PROTECTED_DATABASES:
            raise SystemExit(f"refusing to drop database {self.database!r}")
        ident = '"' + self.database.replace('"', '""') + '"'
        self.psql(f"DROP DATABASE IF EXISTS {ident} WITH (FORCE)", database="postgres")
        self.psql(f"CREATE DATABASE {ident}", database="postgres")

    def postmaster_pid(self) -> int | None:
        """The server's postmaster, when it runs on this machine and we may read its pid file."""
        if self.host not in ("127.0.0.1", "localhost", "::1") and not self.host.startswith("/"):
            return None
        try:
            datadir = self.psql("SHOW data_directory")
            return int((Path(datadir) / "postmaster.pid").read_text().split("\n", 1)[0])
        except (RuntimeError, OSError, ValueError):
            return None

    def foreign_markers(self) -> list[str]:
        """Process-title fragments (`` role db ``) of backends serving other databases."""
        roles = self.psql("SELECT rolname FROM pg_roles").split()
        dbs = self.psql(
            f"SELECT datname FROM pg_database WHERE datname <> {sql_literal(self.database)}"
        ).split()
        return [f" {role} {db} " for role in roles for db in dbs]

    def drop(self) -> None:
        ident = '"' + self.database.replace('"', '""') + '"'
        self.psql(f"DROP DATABASE IF EXISTS {ident} WITH (FORCE)", database="postgres")


# --------------------------------------------------------------------------------------------
# The service under test
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``taskstream serve`` in its own process group, stopped with SIGTERM at the end."""

    def __init__(self, cmd: list[str], env: Mapping[str, str], log: Path) -> None:
        self.cmd = cmd
        self.env = dict(env)
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def wait_ready(self, host: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                status, body = asyncio.run(httpload.probe(host, port, "GET", "/readyz"))
                if status == 200:
                    return
                last = f"{status} {body[:200]!r}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.25)
        raise RuntimeError(f"/readyz not 200 after {timeout:.0f} s ({last}); see {self.log_path}")

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    pg: Pg
    host: str
    port: int
    token: str
    single_tasks: Path
    batch_tasks: Path
    meter: CpuMeter
    workdir: Path
    acknowledged: int = 0
    notifies: NotifyCounter | None = None
    commits: int = 0


@contextlib.contextmanager
def cpu_window(ctx: Context) -> Iterator[list[float]]:
    """(service %, postgres %, machine busy %) of one core, filled in when the block ends.

    Also counts the service's commits (NOTIFYs) in the window into ``ctx.commits``.
    """
    before = ctx.notifies.read() if ctx.notifies else 0
    with ctx.meter.window() as cpu:
        yield cpu
    ctx.commits = (ctx.notifies.read() - before) if ctx.notifies else 0


def settle(ctx: Context) -> None:
    """Rest between scenarios; with --checkpoint, flush dirty buffers first.

    A forced checkpoint keeps one scenario's checkpoint out of the next one, but the first
    change of every page after a checkpoint writes the whole page to the WAL, so it also makes
    the following seconds more expensive than the steady state; hence off by default.
    """
    if ctx.args.checkpoint:
        ctx.pg.psql("CHECKPOINT")
    time.sleep(ctx.args.pause)


def pgbench(ctx: Context, script: str, events_per_tx: int, key: str, label: str) -> Measurement:
    args = ctx.args
    settle(ctx)
    logdir = Path(tempfile.mkdtemp(prefix="pgbench-", dir=ctx.workdir))
    cmd = [
        "pgbench",
        "-n",
        "-M",
        "prepared",
        "-c",
        str(args.pgbench_clients),
        "-j",
        str(args.pgbench_threads),
        "-T",
        str(max(1, round(args.duration))),
        "-f",
        str(PGBENCH_DIR / script),
        "-l",
        "--log-prefix",
        str(logdir / "tx"),
    ]
    with cpu_window(ctx) as cpu:
        res = run_child(cmd, env=ctx.pg.env())
    if res.returncode:
        raise RuntimeError(f"pgbench failed: {res.stderr.strip()}\n{res.stdout}")
    tps = float(re.search(r"tps = ([\d.]+) \(without initial", res.stdout).group(1))  # type: ignore[union-attr]
    failed_match = re.search(r"number of failed transactions: (\d+)", res.stdout)
    latencies: list[float] = []
    for log in logdir.iterdir():
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                latencies.append(int(parts[2]) / 1e6)
    shutil.rmtree(logdir, ignore_errors=True)
    reset_scratch_tables(ctx)
    lat = httpload.summarise(latencies)
    return Measurement(
        key,
        label,
        str(args.pgbench_clients),
        tps * events_per_tx,
        tps,
        lat["p50_ms"],
        lat["p99_ms"],
        int(failed_match.group(1)) if failed_match else 0,
        res.cpu_s / res.wall_s * 100,
        service_cpu_pct=cpu[0],
        postgres_cpu_pct=cpu[1],
        busy_pct=cpu[2],
        extra={"events_per_tx": events_per_tx},
    )


def reset_scratch_tables(ctx: Context) -> None:
    """Empty pgbench's tables, so every run starts alike and leaves no work for autovacuum."""
    if ctx.pg.psql("SELECT to_regclass('raw_full_events') IS NOT NULL") == "t":
        ctx.pg.psql("TRUNCATE raw_events, raw_full_events")
        ctx.pg.psql("VACUUM raw_full_tasks")
    else:
        ctx.pg.psql("TRUNCATE raw_events")


def parse_wrk(stdout: str) -> dict[str, float]:
    for line in stdout.splitlines():
        if line.startswith("WRKJSON "):
            data: dict[str, float] = json.loads(line[8:])
            return data
    raise RuntimeError(f"wrk printed no result:\n{stdout}")


def http_closed(
    ctx: Context, *, conns: int, batch: bool, key: str, label: str, duration: float | None = None
) -> Measurement:
    """Closed-loop load at ``conns`` connections: wrk, or Python processes without it."""
    args = ctx.args
    duration = duration or args.duration
    settle(ctx)
    tasks_file = ctx.batch_tasks if batch else ctx.single_tasks
    per_request = args.batch_size if batch else 1
    if args.client == "wrk":
        threads = max(1, min(args.wrk_threads, conns))
        cmd = [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(conns),
            "-d",
            f"{duration:g}s",
            "--timeout",
            "30s",
            "-s",
            str(WRK_SCRIPT),
            f"http://{ctx.host}:{ctx.port}",
            "--",
            "batch" if batch else "single",
            str(tasks_file),
            ctx.token,
            str(threads),
            str(args.batch_size),
            str(args.batch_tasks),
        ]
        with cpu_window(ctx) as cpu:
            res = run_child(cmd)
        if res.returncode:
            raise RuntimeError(f"wrk failed ({res.returncode}): {res.stderr}\n{res.stdout}")
        r = parse_wrk(res.stdout)
        elapsed = r["duration_us"] / 1e6
        error_kinds = {
            k: int(r[k])
            for k in ("bad_status", "err_connect", "err_read", "err_write", "err_timeout")
            if r[k]
        }
        errors = sum(error_kinds.values())
        ok = int(r["items_ok"])
        p50, p99 = r["p50_ms"], r["p99_ms"]
        requests = r["requests"]
        loadgen = res.cpu_s / res.wall_s * 100
    else:
        procs = max(1, min(args.client_procs, conns))
        shares = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
        cmds = [
            [
                sys.executable,
                str(BENCH_DIR / "httpload.py"),
                "closed",
                "--host",
                ctx.host,
                "--port",
                str(ctx.port),
                "--token",
                ctx.token,
                "--tasks-file",
                str(tasks_file),
                "--duration",
                str(duration),
                "--conns",
                str(n),
                "--offset",
                str(i * 997),
                "--batch-size",
                str(args.batch_size if batch else 0),
                "--batch-tasks",
                str(args.batch_tasks),
            ]
            for i, n in enumerate(shares)
        ]
        with cpu_window(ctx) as cpu:
            results = run_parallel(cmds)
        outs = [json.loads(r.stdout) for r in results]
        elapsed = max(float(o["elapsed_s"]) for o in outs)
        latencies = sorted(x / 1000 for o in outs for x in o["latencies_ms"])
        lat = httpload.summarise(latencies)
        p50, p99 = lat["p50_ms"], lat["p99_ms"]
        ok = sum(int(o["ok"]) for o in outs)
        error_kinds = {}
        for o in outs:
            for k, v in o["errors"].items():
                error_kinds[k] = error_kinds.get(k, 0) + int(v)
        errors = sum(error_kinds.values())
        requests = sum(int(o["completed"]) for o in outs)
        loadgen = sum(float(o["cpu_s"]) for o in outs) / elapsed * 100
    ctx.acknowledged += ok
    return Measurement(
        key,
        label,
        str(conns),
        ok / elapsed,
        requests / elapsed,
        p50,
        p99,
        errors,
        loadgen,
        service_cpu_pct=cpu[0],
        postgres_cpu_pct=cpu[1],
        busy_pct=cpu[2],
        extra={
            "per_request": per_request,
            "commits": ctx.commits,
            "ok": ok,
            "error_kinds": error_kinds,
        },
    )


def run_parallel(cmds: Sequence[Sequence[str]]) -> list[ChildResult]:
    """Several load processes at once (threads only wait for them)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(cmds)) as pool:
        results = list(pool.map(run_child, cmds))
    for r in results:
        if r.returncode:
            raise RuntimeError(f"load client failed: {r.stderr}")
    return results


def http_paced(ctx: Context, key: str, label: str) -> Measurement:
    args = ctx.args
    settle(ctx)
    cmd = [
        sys.executable,
        str(BENCH_DIR / "httpload.py"),
        "paced",
        "--host",
        ctx.host,
        "--port",
        str(ctx.port),
        "--token",
        ctx.token,
        "--tasks-file",
        str(ctx.single_tasks),
        "--duration",
        str(args.paced_duration),
        "--rate",
        str(args.rate),
    ]
    with cpu_window(ctx) as cpu:
        res = run_child(cmd)
    if res.returncode:
        raise RuntimeError(f"paced client failed: {res.stderr}")
    r = json.loads(res.stdout)
    ok = int(r["ok"])
    ctx.acknowledged += ok
    errors = sum(int(v) for v in r["errors"].values())
    return Measurement(
        key,
        label,
        f"open loop, {args.rate:g}/s",
        ok / float(r["elapsed_s"]),
        int(r["completed"]) / float(r["elapsed_s"]),
        float(r["p50_ms"]),
        float(r["p99_ms"]),
        errors,
        float(r["cpu_s"]) / float(r["elapsed_s"]) * 100,
        service_cpu_pct=cpu[0],
        postgres_cpu_pct=cpu[1],
        busy_pct=cpu[2],
        extra={
            "p99_9_ms": r["p99_9_ms"],
            "max_ms": r["max_ms"],
            "send_delay_p99_ms": r["send_delay_p99_ms"],
            "connections": r["connections_open"],
            "error_kinds": r["errors"],
            "commits": ctx.commits,
            "ok": ok,
        },
    )


def scenarios(ctx: Context) -> list[Callable[[], Measurement]]:
    args = ctx.args
    out: list[Callable[[], Measurement]] = []
    if not args.skip_pgbench:
        out += [
            lambda: pgbench(
                ctx,
                "one_event.sql",
                1,
                "pg1",
                "pgbench: lock + insert 1 row + notify, 1 statement/tx",
            ),
            lambda: pgbench(
                ctx,
                "hundred_events.sql",
                100,
                "pg100",
                "pgbench: lock + insert 100 rows + notify per tx",
            ),
        ]
        if not args.skip_http and not args.skip_service_shaped:
            out.append(
                lambda: pgbench(
                    ctx,
                    "service_shaped.sql",
                    100,
                    "pgshaped",
                    "pgbench: service-shaped 100-event tx (events' indexes + FK, 10 task rows "
                    "locked and updated)",
                )
            )
    if not args.skip_http:
        for conns in args.concurrency:
            out.append(
                functools.partial(
                    http_closed,
                    ctx,
                    conns=conns,
                    batch=False,
                    key=f"single{conns}",
                    label="HTTP single append (closed loop)",
                )
            )
        out.append(
            lambda: http_closed(
                ctx,
                conns=args.batch_conns,
                batch=True,
                key="batch",
                label=f"HTTP batch, {args.batch_size} events/request",
            )
        )
        if args.rate > 0:
            out.append(lambda: http_paced(ctx, "paced", "HTTP single append, fixed rate"))
    return out


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError):
        kib = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def fmt_ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def render_table(summaries: Sequence[Summary]) -> str:
    rows = [
        "| scenario | clients | events/s (median) | events/s (min-max) | requests/s | p50 ms "
        "| p99 ms | errors | load generator CPU | service CPU | Postgres CPU | other CPU "
        "| machine busy | service CPU µs/event | Postgres CPU µs/event | events/commit |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in summaries:
        lo, hi = s.spread("events_per_s")
        rows.append(
            f"| {s.label} | {s.clients} | {fmt_int(s.median('events_per_s'))} "
            f"| {fmt_int(lo)}-{fmt_int(hi)} | {fmt_int(s.median('requests_per_s'))} "
            f"| {fmt_ms(s.median('p50_ms'))} | {fmt_ms(s.median('p99_ms'))} "
            f"| {sum(m.errors for m in s.runs)} | {s.median('loadgen_cpu_pct'):.0f} % "
            f"| {s.median('service_cpu_pct'):.0f} % | {s.median('postgres_cpu_pct'):.0f} % "
            f"| {s.median('other_cpu_pct'):.0f} % | {s.median('busy_pct'):.0f} % "
            f"| {s.median('service_us_per_event'):.0f} | {s.median('postgres_us_per_event'):.0f} "
            f"| {s.median('events_per_commit'):.1f} |"
        )
    return "\n".join(rows)


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def render_targets(by_key: Mapping[str, Summary], args: argparse.Namespace) -> str:
    lines = ["| target | measured | ratio | |", "|---|---|--:|---|"]
    single = by_key.get(f"single{max(args.concurrency)}") if args.concurrency else None
    pg1 = by_key.get("pg1")
    if single and pg1:
        ratio = single.median("events_per_s") / pg1.median("events_per_s")
        per_rep = [
            s.events_per_s / p.events_per_s for s, p in zip(single.runs, pg1.runs, strict=False)
        ]
        lines.append(
            f"| single appends at {single.clients} clients ≥ {TARGET_SINGLE_RATIO}x raw "
            f"one-event-per-transaction rate (same run) | {fmt_int(single.median('events_per_s'))}"
            f" vs {fmt_int(pg1.median('events_per_s'))} events/s | {ratio:.2f}x "
            f"(per repetition: {', '.join(f'{x:.2f}' for x in per_rep)}) "
            f"| {verdict(ratio >= TARGET_SINGLE_RATIO)} |"
        )
    batch = by_key.get("batch")
    if batch:
        value = batch.median("events_per_s")
        lines.append(
            f"| batch ≥ {fmt_int(TARGET_BATCH_EVENTS)} events/s | {fmt_int(value)} events/s "
            f"| {value / TARGET_BATCH_EVENTS:.2f}x | {verdict(value >= TARGET_BATCH_EVENTS)} |"
        )
        for key, label in (
            ("pg100", "raw 100-row transactions"),
            ("pgshaped", "the service-shaped raw transaction"),
        ):
            ceiling = by_key.get(key)
            if ceiling:
                lines.append(
                    f"| (context) batch vs {label} | {fmt_int(value)} vs "
                    f"{fmt_int(ceiling.median('events_per_s'))} events/s "
                    f"| {value / ceiling.median('events_per_s'):.2f}x | |"
                )
    paced = by_key.get("paced")
    if paced:
        p99 = paced.median("p99_ms")
        lines.append(
            f"| p99 of a single append < {TARGET_PACED_P99_MS:g} ms at {args.rate:g}/s offered "
            f"| p99 {fmt_ms(p99)} ms (p50 {fmt_ms(paced.median('p50_ms'))} ms) "
            f"| {p99 / TARGET_PACED_P99_MS:.2f}x of the limit "
            f"| {verdict(p99 < TARGET_PACED_P99_MS)} |"
        )
    return "\n".join(lines)


def render_report(
    summaries: Sequence[Summary], args: argparse.Namespace, info: Mapping[str, str]
) -> str:
    by_key = {s.key: s for s in summaries}
    paced = by_key.get("paced")
    notes = []
    if paced:

        def med(name: str) -> str:
            return fmt_ms(statistics.median(float(str(m.extra[name])) for m in paced.runs))

        notes.append(
            f"- Fixed-rate run: p99.9 {med('p99_9_ms')} ms, max {med('max_ms')} ms (medians); "
            f"the client's own lateness in sending (p99) was {med('send_delay_p99_ms')} ms and "
            "is included in the latency, which counts from each request's scheduled time."
        )
    for s in summaries:
        kinds: dict[str, int] = {}
        for m in s.runs:
            for k, v in dict(m.extra.get("error_kinds") or {}).items():  # type: ignore[call-overload]
                kinds[k] = kinds.get(k, 0) + int(v)
        if kinds:
            detail = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
            notes.append(f"- Errors in {s.label} @ {s.clients}: {detail}.")
    if info.get("durability"):
        notes.append(f"- {info['durability']}")
    client = (
        f"`wrk` ({info.get('wrk', 'wrk')}, {args.wrk_threads} thread(s), Lua script "
        "`bench/wrk/append.lua`)"
        if args.client == "wrk"
        else f"`bench/httpload.py closed` in {args.client_procs} processes"
    )
    return (
        "\n".join(
            [
                f"Command: `{info['command']}`",
                "",
                f"- Date: {info['date']}"
                + (f"; code: commit {info['code']}" if info.get("code") else ""),
                f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, "
                f"{info['os']}; {info['pg_version']}; Python {info['python']}",
                f"- Service: `taskstream serve --workers {args.workers}"
                f"{' ' + args.server_args if args.server_args else ''}` (default settings "
                "otherwise); service, Postgres and the load generator share the machine's cores",
                f"- Each scenario ran {args.repeats}x for {args.duration:g} s (fixed-rate run "
                f"{args.paced_duration:g} s), interleaved; the table shows medians. Closed-loop "
                f"client: {client}; fixed-rate client: `bench/httpload.py paced` (open loop).",
                "- CPU columns are per cent of one core (the machine has "
                f"{int(info['nproc']) * 100} %): the load generator's own CPU time, the service's "
                "process tree, Postgres (the backends of the bench database and the server's "
                "shared background processes), the rest (other processes, interrupts and "
                "softirqs: loopback TCP), and the whole machine. Before the run the machine was "
                f"{info.get('idle_busy', '?')} busy. `events/commit` counts the service's "
                "NOTIFYs (one per committed group) on a LISTEN connection.",
                "",
                render_table(summaries),
                "",
                render_targets(by_key, args),
                "",
                *notes,
            ]
        ).rstrip()
        + "\n"
    )


def replace_block(
    path: Path, report: str, *, begin: str, end: str, section: str = "## Latest results\n"
) -> None:
    """Put ``report`` between the ``begin``/``end`` markers of ``path``, keeping the text
    around them; without markers, append ``section`` and the block at the end."""
    block = f"{begin}\n\n{report}\n{end}"
    text = path.read_text() if path.exists() else "# Performance\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + section + "\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_docs(path: Path, report: str) -> None:
    replace_block(path, report, begin=BEGIN_MARK, end=END_MARK)


def run_description(
    script: str, argv: Sequence[str] | None, noisy: str = "results will be noisy"
) -> dict[str, str]:
    """The machine, the command as typed, the code, the date and how busy the machine already
    was (``noisy``: what to warn of when it was), for a benchmark's report."""
    info = machine()
    info["command"] = f"uv run python bench/{script}" + (
        " " + shlex.join(sys.argv[1:]) if argv is None and sys.argv[1:] else ""
    )
    if code := working_tree_code():
        info["code"] = code
    info["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    busy = busy_percent(2.0)
    info["idle_busy"] = f"{busy:.0f} %"
    if busy > 20:
        print(f"warning: the machine is already {busy:.0f} % busy; {noisy}", flush=True)
    return info


def publish_report(
    report: str,
    args: argparse.Namespace,
    document: Mapping[str, object],
    docs: Callable[[Path, str], None],
) -> None:
    """Print the report; write ``document`` as JSON (``--json``) and the docs block
    (``--output``) when asked to. Shared by the benchmarks whose results are runs."""
    print()
    print(report)
    if args.json:
        args.json.write_text(json.dumps(document, indent=2))
    if args.output:
        docs(args.output, report)
        print(f"wrote {args.output}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark taskstream's append path against the raw-Postgres ceiling.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 s per scenario, 1 repetition, docs untouched",
    )
    p.add_argument("--workers", type=int, default=2, help="taskstream serve --workers")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per closed-loop scenario")
    p.add_argument(
        "--paced-duration", type=float, default=10.0, help="seconds of the fixed-rate run"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 8, 32],
        help="single-append connection counts",
    )
    p.add_argument("--batch-conns", type=int, default=4, help="connections for the batch endpoint")
    p.add_argument("--batch-size", type=int, default=100, help="events per batch request")
    p.add_argument("--batch-tasks", type=int, default=10, help="distinct tasks in one batch")
    p.add_argument(
        "--rate",
        type=float,
        default=1000.0,
        help="offered appends/s of the fixed-rate run (0: skip)",
    )
    p.add_argument(
        "--tasks", type=int, default=512, help="tasks the single appends are spread over"
    )
    add_environment_options(p)
    args = p.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 2.0)
        args.paced_duration = min(args.paced_duration, 2.0)
        args.repeats = 1
        args.warmup = min(args.warmup, 1.0)
        args.pause = min(args.pause, 0.2)
    if args.client is None:
        args.client = "wrk" if shutil.which("wrk") else "python"
    if args.no_docs:
        args.output = None
    elif args.output is None and not args.quick:
        args.output = DOCS
    return args


def add_environment_options(p: argparse.ArgumentParser) -> None:
    """Load generators, database, service command, noise handling, output."""
    p.add_argument("--pgbench-clients", type=int, default=32)
    p.add_argument("--pgbench-threads", type=int, default=2)
    p.add_argument(
        "--client",
        choices=["wrk", "python"],
        default=None,
        help="closed-loop client (default: wrk if installed)",
    )
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument(
        "--client-procs", type=int, default=2, help="processes of the Python closed-loop client"
    )
    p.add_argument(
        "--checkpoint",
        action="store_true",
        help="run CHECKPOINT before every scenario (see settle())",
    )
    p.add_argument(
        "--pause",
        type=float,
        default=1.0,
        help="seconds of rest before each scenario",
    )
    p.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of unrecorded load before the first run"
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/"),
        help="server to use (its database part is ignored)",
    )
    p.add_argument(
        "--database", default="taskstream_bench", help="bench database: DROPPED and recreated"
    )
    p.add_argument(
        "--keep-database", action="store_true", help="leave the bench database in place afterwards"
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown file to update (default {DOCS.relative_to(ROOT)}, none with --quick)",
    )
    p.add_argument("--no-docs", action="store_true", help="do not write the markdown file")
    p.add_argument(
        "--json", type=Path, default=None, help="also write every measurement as JSON here"
    )
    p.add_argument(
        "--server-cmd",
        default="uv run taskstream serve --host {host} --port {port} --workers {workers}",
        help="how to start the service",
    )
    p.add_argument(
        "--server-args", default="", help="extra arguments for the server, e.g. --no-access-log"
    )
    p.add_argument(
        "--migrate-cmd", default="uv run taskstream migrate", help="how to apply migrations"
    )
    p.add_argument("--ready-timeout", type=float, default=90.0)
    p.add_argument(
        "--max-other-cpu",
        type=float,
        default=40.0,
        help="CPU %% used outside load generator, service and Postgres above which a "
        "measurement is considered disturbed and repeated",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="wait up to this many seconds for the machine to be idle before starting",
    )
    p.add_argument(
        "--retry-wait",
        type=float,
        default=60.0,
        help="seconds to wait (at most) for an idle machine before re-measuring",
    )
    p.add_argument(
        "--noise-retries", type=int, default=2, help="repeats of a disturbed measurement"
    )
    p.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="do not measure: print the report of a run saved with --json (options not saved "
        "in the file, such as --workers, are taken from this command line)",
    )
    p.add_argument(
        "--from-json-write",
        action="store_true",
        help="with --from-json: also write the report into the markdown file",
    )
    p.add_argument("--skip-pgbench", action="store_true")
    p.add_argument(
        "--skip-service-shaped",
        action="store_true",
        help="leave out the extra pgbench run shaped like the service's group transaction",
    )
    p.add_argument("--skip-http", action="store_true")


def setup_tasks(ctx: Context, args: argparse.Namespace) -> None:
    single = [f"bench-s{i:05d}" for i in range(args.tasks)]
    batch = [f"bench-b{i:05d}" for i in range(max(args.batch_tasks, 1) * 32)]
    ctx.single_tasks.write_text("\n".join(single) + "\n")
    ctx.batch_tasks.write_text("\n".join(batch) + "\n")
    asyncio.run(httpload.create_tasks(ctx.host, ctx.port, ctx.token, single + batch))


def durability_check(ctx: Context) -> str:
    try:
        stored = int(
            ctx.pg.psql(
                "SELECT count(*) FROM events WHERE tenant = "
                f"{sql_literal(TENANT)} AND type = 'progress'"
            )
        )
    except RuntimeError as exc:
        return f"Durability check skipped ({exc})."
    if stored < ctx.acknowledged:
        return (
            f"Durability check FAILED: {ctx.acknowledged:,} appends acknowledged but only "
            f"{stored:,} progress events stored."
        )
    return (
        f"Durability check: {ctx.acknowledged:,} appends acknowledged, {stored:,} progress events "
        f"stored (the {stored - ctx.acknowledged:,} more were in flight when a client stopped "
        "or lost its connection)."
    )


def busy_percent(seconds: float) -> float:
    """Whole-machine CPU use over the next ``seconds``, per cent of one core."""
    busy0, total0 = system_ticks()
    time.sleep(seconds)
    busy1, total1 = system_ticks()
    return (busy1 - busy0) / max(total1 - total0, 1) * 100 * (os.cpu_count() or 1)


def wait_quiet(max_wait: float, threshold: float = 15.0) -> float:
    """Wait (up to ``max_wait`` s) for three quiet seconds in a row; return the last reading."""
    deadline = time.monotonic() + max_wait
    quiet = 0
    said = 0.0
    busy = busy_percent(1.0)
    while time.monotonic() < deadline:
        quiet = quiet + 1 if busy < threshold else 0
        if quiet >= 3:
            break
        if quiet == 0 and time.monotonic() - said > 15:
            print(f"waiting for a quiet machine ({busy:.0f} % busy)", flush=True)
            said = time.monotonic()
        busy = busy_percent(1.0)
    return busy


def working_tree_code() -> str:
    """The commit being measured, and whether service/ or migrations/ differ from it."""
    head = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h %cI"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "service", "migrations"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not head:
        return ""
    return head + (" with uncommitted changes to service/ or migrations/" if dirty else "")


def describe_run(args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, str]:
    info = machine()
    info["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["command"] = "uv run python bench/append.py" + (
        " " + shlex.join(sys.argv[1:]) if argv is None and sys.argv[1:] else ""
    )
    if args.client == "wrk":
        ver = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        info["wrk"] = (ver.stdout or ver.stderr).split("[", 1)[0].strip()
    if code := working_tree_code():
        info["code"] = code
    idle_busy = wait_quiet(args.wait_quiet)
    info["idle_busy"] = f"{idle_busy:.0f} %"
    if idle_busy > 20:
        print(
            f"warning: the machine is already {idle_busy:.0f} % busy (of "
            f"{(os.cpu_count() or 1) * 100} %) before the benchmark; results will be noisy",
            flush=True,
        )
    return info


def migrate(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    done = subprocess.run(
        shlex.split(args.migrate_cmd),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"migrate failed:\n{done.stdout}\n{done.stderr}")


def start_service(ctx: Context, env: Mapping[str, str], secret: str) -> Server:
    """Start the server, wait for /readyz, mint the token, create the tasks, warm up."""
    args = ctx.args
    cmd = args.server_cmd.format(host=ctx.host, port=ctx.port, workers=args.workers)
    if args.server_args:
        cmd += " " + args.server_args
    server = Server(shlex.split(cmd), env, ctx.workdir / "server.log")
    print(f"starting: {cmd}", flush=True)
    server.start()
    server.wait_ready(ctx.host, ctx.port, args.ready_timeout)
    ctx.meter = CpuMeter(server.pid, ctx.meter.postmaster_pid, ctx.meter.foreign_markers)
    try:
        from service.store.queries import CHANNEL
    except ImportError:
        CHANNEL = "taskstream_events_v1"
    ctx.notifies = NotifyCounter(ctx.pg.url(), CHANNEL)
    ctx.notifies.start()
    from service.tokens import mint

    ctx.token = mint(
        secret,
        sub="bench",
        tenant=TENANT,
        scopes="tasks:read tasks:write events:read",
        ttl_seconds=24 * 3600,
    )
    setup_tasks(ctx, args)
    if args.warmup > 0:
        http_closed(
            ctx,
            conns=max(args.concurrency or [8]),
            batch=False,
            key="warmup",
            label="warm-up",
            duration=args.warmup,
        )
    return server


def run_all(ctx: Context) -> list[Measurement]:
    args = ctx.args
    measurements: list[Measurement] = []
    runs = scenarios(ctx)
    for rep in range(args.repeats):
        for run in runs:
            m = run()
            for _ in range(args.noise_retries):
                if m.other_cpu_pct <= args.max_other_cpu:
                    break
                print(
                    f"  {m.label} @ {m.clients}: {m.other_cpu_pct:.0f} % CPU went to other "
                    "processes (someone else is using the machine); measuring again",
                    flush=True,
                )
                wait_quiet(args.retry_wait)
                m = run()
            measurements.append(m)
            print(
                f"[{rep + 1}/{args.repeats}] {m.label} @ {m.clients}: "
                f"{m.events_per_s:,.0f} events/s, p50 {m.p50_ms:.2f} ms, "
                f"p99 {m.p99_ms:.2f} ms, errors {m.errors}, load-gen CPU "
                f"{m.loadgen_cpu_pct:.0f} %, service {m.service_cpu_pct:.0f} %, "
                f"postgres {m.postgres_cpu_pct:.0f} %, other {m.other_cpu_pct:.0f} %, "
                f"busy {m.busy_pct:.0f} %; CPU/event: service {m.service_us_per_event:.0f} µs, "
                f"postgres {m.postgres_us_per_event:.0f} µs; events/commit "
                f"{m.events_per_commit:.1f}",
                flush=True,
            )
    return measurements


def summarise(measurements: Sequence[Measurement]) -> list[Summary]:
    summaries: list[Summary] = []
    for m in measurements:
        found = next((s for s in summaries if s.key == m.key), None)
        if found is None:
            summaries.append(Summary(m.key, m.label, m.clients, [m]))
        else:
            found.runs.append(m)
    return summaries


SAVED_ARGS = (
    *("workers", "repeats", "duration", "paced_duration", "rate", "concurrency", "client"),
    *("wrk_threads", "client_procs", "batch_size", "batch_conns", "server_args"),
)


def rerender(args: argparse.Namespace) -> int:
    """Print (and with --output, write) the report of a run saved with --json."""
    saved = json.loads(args.from_json.read_text())
    for name, value in saved.get("args", {}).items():
        setattr(args, name, value)
    measurements = [Measurement(**m) for m in saved["measurements"]]
    report = render_report(summarise(measurements), args, saved["info"])
    print(report)
    if args.output and args.from_json_write:
        write_docs(args.output, report)
        print(f"wrote {args.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return rerender(args)
    if args.client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk), or use --client python")
    if not args.skip_pgbench and not shutil.which("pgbench"):
        raise SystemExit("pgbench is not installed (postgresql-client)")
    stop_cleanly_on_sigterm()
    pg = Pg.from_url(args.database_url, args.database)
    lock = claim_database(pg)
    info = describe_run(args, argv)
    print(f"bench database {pg.database!r} on {pg.host}:{pg.port}: recreating", flush=True)
    pg.recreate()
    info["pg_version"] = "PostgreSQL " + pg.psql("SHOW server_version")
    secret = secrets.token_hex(32)
    env = dict(os.environ)
    env.update(TASKSTREAM_DATABASE_URL=pg.url(), TASKSTREAM_JWT_SECRET=secret)
    workdir = Path(tempfile.mkdtemp(prefix="taskstream-bench-"))
    ctx = Context(
        args,
        pg,
        "127.0.0.1",
        free_port(),
        "",
        workdir / "single-tasks.txt",
        workdir / "batch-tasks.txt",
        CpuMeter(None, pg.postmaster_pid(), pg.foreign_markers()),
        workdir,
    )
    server: Server | None = None
    try:
        if not args.skip_http:
            migrate(args, env)
        pg.psql_file(PGBENCH_DIR / "schema.sql")
        if not args.skip_http:
            pg.psql_file(PGBENCH_DIR / "schema_full.sql")
        if not args.skip_http:
            server = start_service(ctx, env, secret)
        measurements = run_all(ctx)
        if not args.skip_http:
            info["durability"] = durability_check(ctx)
    finally:
        if ctx.notifies is not None:
            with contextlib.suppress(Exception):
                ctx.notifies.stop()
        if server is not None:
            code = server.stop()
            if code not in (0, None):
                print(f"note: server exited with {code}; log: {server.log_path}", flush=True)
        if not args.keep_database:
            with contextlib.suppress(RuntimeError):
                pg.drop()

    publish(args, info, measurements)
    shutil.rmtree(workdir, ignore_errors=True)
    lock.close()
    return 0


def publish(
    args: argparse.Namespace, info: Mapping[str, str], measurements: Sequence[Measurement]
) -> None:
    """Print the report; write the JSON and the markdown file when asked to."""
    document = {
        "info": info,
        "args": {name: getattr(args, name) for name in SAVED_ARGS},
        "measurements": [asdict(m) for m in measurements],
    }
    publish_report(render_report(summarise(measurements), args, info), args, document, write_docs)


def stop_cleanly_on_sigterm() -> None:
    """SIGTERM (``timeout``, ``kill``) unwinds like Ctrl-C: the ``finally`` blocks stop the
    server, whose own session a signal to this process would not reach, and drop the database."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def claim_database(pg: Pg) -> IO[str]:
    """An exclusive lock file per bench database, held until the process exits.

    The run drops and recreates its database, so a second run against the same one would
    destroy the first one's mid-measurement.
    """
    path = Path(tempfile.gettempdir()) / f"taskstream-bench-{pg.host}-{pg.port}-{pg.database}.lock"
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        raise SystemExit(
            f"database {pg.database!r} is in use by another benchmark run ({owner}); "
            "wait for it or pass --database NAME"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


if __name__ == "__main__":
    sys.exit(main())
