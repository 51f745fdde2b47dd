"""A small, low-overhead HTTP/1.1 load client for the append benchmark.

Used two ways:

* imported by ``bench/append.py`` for set-up (creating the tasks, waiting for ``/readyz``);
* run as its own process (``python bench/httpload.py paced|closed …``) so that its CPU time can
  be measured separately from the service's and it never shares an event loop with the
  orchestrator.

``paced`` is an open-loop client: request *i* is due at ``start + i / rate`` whatever happened to
the requests before it, and its latency is measured from that scheduled time (so a stalled server
shows up as latency instead of silently lowering the offered rate — no coordinated omission).
``closed`` is a closed-loop client (each connection sends its next request when the previous
answer arrives); it is the fallback for machines without ``wrk``.

Requests are pre-built byte strings on keep-alive connections, and responses are parsed just far
enough to find the status and the body length, which keeps the client at a few per cent of a core
at the rates measured here. Times come from ``time.perf_counter()``: uvloop's ``loop.time()``
only has millisecond resolution and is cached per loop iteration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SINGLE_BODY = b'{"type":"progress","data":{"percent":12.5,"message":"step"}}'


class HttpError(Exception):
    """The server closed the connection or sent something that is not HTTP/1.1."""


def build_request(
    method: str, path: str, *, host: str, token: str | None, body: bytes | None = None
) -> bytes:
    """A complete HTTP/1.1 keep-alive request as bytes."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Accept: application/json"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head + (body or b"")


def single_append_request(host: str, token: str, task_id: str) -> bytes:
    return build_request(
        "POST", f"/v1/tasks/{task_id}/events", host=host, token=token, body=SINGLE_BODY
    )


def batch_body(task_ids: Sequence[str], size: int) -> bytes:
    """``size`` progress events spread round-robin over ``task_ids``."""
    items = [
        {
            "task_id": task_ids[i % len(task_ids)],
            "type": "progress",
            "data": {"percent": 12.5, "message": "step"},
        }
        for i in range(size)
    ]
    return json.dumps({"events": items}, separators=(",", ":")).encode()


def count_batch_ok(body: bytes) -> int:
    """Items of a batch answer that were appended (status 201)."""
    try:
        results = json.loads(body)["results"]
    except (ValueError, KeyError, TypeError):
        return 0
    return sum(1 for r in results if r.get("status") == 201)


class Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one pre-built request; return (status, body)."""
        self.writer.write(raw)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.close()
            raise HttpError(f"connection lost: {exc!r}") from exc
        if not head.startswith(b"HTTP/1.1 "):
            self.close()
            raise HttpError(f"not an HTTP/1.1 response: {head[:40]!r}")
        status = int(head[9:12])
        lower = head.lower()
        body: bytes
        marker = lower.find(b"\r\ncontent-length:")
        if marker >= 0:
            end = lower.index(b"\r\n", marker + 2)
            length = int(lower[marker + 17 : end])
            body = await self.reader.readexactly(length) if length else b""
        elif b"\r\ntransfer-encoding: chunked" in lower:
            body = await self._read_chunked()
        else:
            body = b""
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, body

    async def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def stale(self) -> bool:
        """Closed here, or by the server while idle (its keep-alive timeout, 5 s for uvicorn)."""
        return self.closed or self.reader.at_eof() or self.writer.is_closing()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


# --------------------------------------------------------------------------------------------
# Set-up helpers (used in-process by append.py)
# --------------------------------------------------------------------------------------------


async def create_tasks(
    host: str, port: int, token: str, task_ids: Sequence[str], *, concurrency: int = 16
) -> None:
    """POST /v1/tasks for every id (201, or 409 if it already exists)."""
    queue: deque[str] = deque(task_ids)
    hostport = f"{host}:{port}"

    async def worker() -> None:
        conn = await Connection.open(host, port)
        try:
            while queue:
                task_id = queue.popleft()
                body = json.dumps({"id": task_id, "kind": "bench"}).encode()
                raw = build_request("POST", "/v1/tasks", host=hostport, token=token, body=body)
                status, answer = await conn.request(raw)
                if status not in (201, 409):
                    raise RuntimeError(f"creating task {task_id}: {status} {answer[:300]!r}")
                if conn.closed:
                    conn = await Connection.open(host, port)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(task_ids)))))


async def probe(
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: bytes | None = None,
) -> tuple[int, bytes]:
    """One request on a fresh connection."""
    conn = await Connection.open(host, port)
    try:
        return await conn.request(
            build_request(method, path, host=f"{host}:{port}", token=token, body=body)
        )
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# Load modes (run as separate processes)
# --------------------------------------------------------------------------------------------


@dataclass
class Workload:
    host: str
    port: int
    requests: list[bytes]
    batch: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Workload:
        ids = Path(args.tasks_file).read_text().split()
        hostport = f"{args.host}:{args.port}"
        if args.batch_size:
            per = max(1, args.batch_tasks)
            groups = [ids[i : i + per] for i in range(0, len(ids) - per + 1, per)] or [ids]
            requests = [
                build_request(
                    "POST",
                    "/v1/events/batch",
                    host=hostport,
                    token=args.token,
                    body=batch_body(group, args.batch_size),
                )
                for group in groups
            ]
        else:
            requests = [single_append_request(hostport, args.token, i) for i in ids]
        return cls(args.host, args.port, requests, bool(args.batch_size))


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(pct / 100.0 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summarise(latencies_s: list[float]) -> dict[str, float]:
    values = sorted(latencies_s)
    out = {
        f"p{str(p).replace('.', '_')}_ms": percentile(values, p) * 1000 for p in (50, 90, 99, 99.9)
    }
    out["max_ms"] = values[-1] * 1000 if values else 0.0
    out["mean_ms"] = sum(values) / len(values) * 1000 if values else 0.0
    return out


class PacedRun:
    """Open loop: request i is due at start + i/rate; its latency counts from that time.

    Requests take an idle keep-alive connection, or open a new one (up to ``max_conns``), or
    queue for one; time spent queueing counts as latency, as it would for a real client.
    """

    def __init__(self, work: Workload, rate: float, duration: float, max_conns: int) -> None:
        self.work = work
        self.rate = rate
        self.total = int(rate * duration)
        self.max_conns = max_conns
        self.idle: list[Connection] = []
        self.n_open = 0
        self.waiting: deque[asyncio.Future[Connection]] = deque()
        self.latencies: list[float] = []
        self.send_delays: list[float] = []
        self.errors: dict[str, int] = {}
        self.items_ok = 0

    def _error(self, key: str) -> None:
        self.errors[key] = self.errors.get(key, 0) + 1

    async def _acquire(self) -> Connection:
        while self.idle:
            conn = self.idle.pop()
            if not conn.stale():
                return conn
            conn.close()
            self.n_open -= 1
        if self.n_open < self.max_conns:
            self.n_open += 1
            try:
                return await Connection.open(self.work.host, self.work.port)
            except OSError:
                self.n_open -= 1
                raise
        fut: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        return await fut

    def _release(self, conn: Connection) -> None:
        if conn.closed:
            self.n_open -= 1
            return
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        self.idle.append(conn)

    async def _one(self, i: int, due: float) -> None:
        try:
            conn = await self._acquire()
        except OSError as exc:
            self._error(type(exc).__name__)
            return
        self.send_delays.append(time.perf_counter() - due)
        try:
            status, body = await conn.request(self.work.requests[i % len(self.work.requests)])
        except (HttpError, OSError, ValueError) as exc:
            self._error(type(exc).__name__)
            conn.close()
            self._release(conn)
            return
        self.latencies.append(time.perf_counter() - due)
        self._release(conn)
        if self.work.batch and status == 200:
            self.items_ok += count_batch_ok(body)
        elif status == 201:
            self.items_ok += 1
        else:
            self._error(f"status_{status}")

    async def run(self, preopen: int) -> dict[str, object]:
        for _ in range(preopen):
            self.idle.append(await Connection.open(self.work.host, self.work.port))
            self.n_open += 1
        cpu0 = time.process_time()
        pending: set[asyncio.Task[None]] = set()
        start = time.perf_counter() + 0.05
        i = 0
        while i < self.total:
            now = time.perf_counter()
            due = start + i / self.rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while i < self.total and start + i / self.rate <= now:
                task = asyncio.create_task(self._one(i, start + i / self.rate))
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1
        if pending:
            await asyncio.wait(pending, timeout=30)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        for conn in self.idle:
            conn.close()
        return {
            "mode": "paced",
            "offered_rate": self.rate,
            "scheduled": self.total,
            "completed": len(self.latencies),
            "ok": self.items_ok,
            "errors": self.errors,
            "elapsed_s": elapsed,
            "cpu_s": cpu,
            "connections_open": self.n_open,
            "send_delay_p99_ms": percentile(sorted(self.send_delays), 99) * 1000,
            **summarise(self.latencies),
        }


async def run_closed(work: Workload, conns: int, duration: float, offset: int) -> dict[str, object]:
    """Closed loop: each connection sends its next request when the previous answer arrives."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    items_ok = 0
    counter = offset
    connections = [await Connection.open(work.host, work.port) for _ in range(conns)]
    cpu0 = time.process_time()
    start = time.perf_counter()
    stop = start + duration

    async def client(conn: Connection) -> None:
        nonlocal items_ok, counter
        while time.perf_counter() < stop:
            raw = work.requests[counter % len(work.requests)]
            counter += 1
            t0 = time.perf_counter()
            try:
                status, body = await conn.request(raw)
            except (HttpError, OSError, ValueError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                conn.close()
                conn = await Connection.open(work.host, work.port)
                continue
            latencies.append(time.perf_counter() - t0)
            if work.batch and status == 200:
                items_ok += count_batch_ok(body)
            elif status == 201:
                items_ok += 1
            else:
                key = f"status_{status}"
                errors[key] = errors.get(key, 0) + 1
        conn.close()

    await asyncio.gather(*(client(c) for c in connections))
    elapsed = time.perf_counter() - start
    return {
        "mode": "closed",
        "cpu_s": time.process_time() - cpu0,
        "connections": conns,
        "completed": len(latencies),
        "ok": items_ok,
        "errors": errors,
        "elapsed_s": elapsed,
        "latencies_ms": [round(x * 1000, 4) for x in latencies],
    }


def _event_loop_policy() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("paced", "closed"):
        p = sub.add_parser(name)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--token", required=True)
        p.add_argument("--tasks-file", required=True, help="task ids, whitespace separated")
        p.add_argument("--duration", type=float, default=10.0)
        p.add_argument("--batch-size", type=int, default=0, help="0: single appends")
        p.add_argument("--batch-tasks", type=int, default=10, help="distinct tasks per batch")
    paced = sub.choices["paced"]
    paced.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    paced.add_argument("--preopen", type=int, default=32, help="connections opened beforehand")
    paced.add_argument("--max-conns", type=int, default=512)
    closed = sub.choices["closed"]
    closed.add_argument("--conns", type=int, default=1)
    closed.add_argument("--offset", type=int, default=0, help="first request index")
    args = parser.parse_args(argv)

    _event_loop_policy()
    work = Workload.from_args(args)
    if args.mode == "paced":
        paced_run = PacedRun(work, args.rate, args.duration, args.max_conns)
        result = asyncio.run(paced_run.run(args.preopen))
    else:
        result = asyncio.run(run_closed(work, args.conns, args.duration, args.offset))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
