"""Timestamped publisher for ``bench/fanout.py``: POSTs events at a fixed rate (open loop).

Like ``../shared/tools/sseload/publish.py`` (whose ``--template`` it takes), each body is
``template.format(seq=…, sent_ns=…, pad=…)`` with ``sent_ns`` the event's *scheduled* send time
(``time.time_ns()`` clock), so that queueing in the client or the server shows as latency.
Two differences, which matter against uvicorn:

* an idle keep-alive connection that the server has closed (uvicorn closes them after 5 s) is
  noticed and replaced before it is used, instead of failing the publish;
* each request carries an ``Idempotency-Key``, so the one retry on a fresh connection after a
  connection was lost mid-request cannot append an event twice.

Prints one JSON line: scheduled, sent, errors, retries, late_starts, elapsed_s, the publish
round trip p50/p99/max and cpu_s.

    python bench/ssepublish.py --url http://127.0.0.1:8000/v1/tasks/t/events \\
        --header 'Authorization: Bearer JWT' --rate 10 --duration 20 --template '…'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
import urllib.parse
from collections.abc import Sequence

import httpload

DEFAULT_TEMPLATE = (
    '{{"type":"progress","data":{{"percent":50,"message":"{pad}","sent_ns":{sent_ns}}}}}'
)


class Publisher:
    def __init__(self, args: argparse.Namespace) -> None:
        url = urllib.parse.urlsplit(args.url)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.headers = [h.split(":", 1) for h in args.header]
        self.template: str = args.template
        self.timeout: float = args.timeout
        self.pad = "x" * args.pad
        self.run_id = secrets.token_hex(4)
        self.idle: list[httpload.Connection] = []
        self.rtts: list[float] = []
        self.sent = 0
        self.errors = 0
        self.retries = 0
        self.messages: list[str] = []

    def request(self, seq: int, sent_ns: int) -> bytes:
        body = self.template.format(seq=seq, sent_ns=sent_ns, pad=self.pad).encode()
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            f"Idempotency-Key: fanout-{self.run_id}-{seq}",
            *(f"{name.strip()}: {value.strip()}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def connection(self) -> tuple[httpload.Connection, bool]:
        """An idle connection the server has not closed, else a new one; (conn, reused)."""
        while self.idle:
            conn = self.idle.pop()
            if not conn.stale():
                return conn, True
            conn.close()
        return await httpload.Connection.open(self.host, self.port), False

    async def one(self, seq: int, sent_ns: int) -> None:
        raw = self.request(seq, sent_ns)
        started = time.perf_counter()
        for attempt in range(2):
            conn, reused = await self.connection()
            try:
                status, answer = await asyncio.wait_for(conn.request(raw), self.timeout)
            except (httpload.HttpError, OSError) as exc:
                conn.close()
                if reused and attempt == 0:
                    self.retries += 1
                    continue
                self.fail(f"{type(exc).__name__}: {exc}")
                return
            except TimeoutError:
                conn.close()
                self.fail(f"no answer in {self.timeout:g} s")
                return
            if not conn.closed:
                self.idle.append(conn)
            if status >= 300:
                self.fail(f"HTTP {status}: {answer[:200]!r}")
                return
            self.sent += 1
            self.rtts.append(time.perf_counter() - started)
            return

    def fail(self, message: str) -> None:
        self.errors += 1
        if len(self.messages) < 3:
            self.messages.append(message)
            print(f"publish error: {message}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> dict[str, object]:
    publisher = Publisher(args)
    loop = asyncio.get_running_loop()
    interval = 1.0 / args.rate
    t0 = loop.time()
    t0_ns = time.time_ns()
    tasks: list[asyncio.Task[None]] = []
    late = 0
    seq = 0
    while True:
        due = seq * interval
        if due >= args.duration or (args.count and seq >= args.count):
            break
        now = loop.time() - t0
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 0.005:
            late += 1
        seq += 1
        sched_ns = t0_ns + int(due * 1e9)
        tasks.append(asyncio.create_task(publisher.one(seq, sched_ns)))
    if tasks:
        await asyncio.wait(tasks, timeout=args.timeout * 2 + 1)
    elapsed = loop.time() - t0
    for conn in publisher.idle:
        conn.close()
    lat = httpload.summarise(publisher.rtts)
    return {
        "scheduled": seq,
        "sent": publisher.sent,
        "errors": publisher.errors,
        "unfinished": seq - publisher.sent - publisher.errors,
        "retries": publisher.retries,
        "late_starts": late,
        "elapsed_s": round(elapsed, 3),
        "publish_rtt_ms_p50": round(lat["p50_ms"], 3),
        "publish_rtt_ms_p99": round(lat["p99_ms"], 3),
        "publish_rtt_ms_max": round(lat["max_ms"], 3),
        "error_messages": publisher.messages,
        "cpu_s": round(time.process_time(), 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--url", required=True)
    p.add_argument("--header", action="append", default=[], metavar="'K: V'")
    p.add_argument("--template", default=DEFAULT_TEMPLATE)
    p.add_argument("--pad", type=int, default=64, help="bytes of 'x' in {pad}")
    p.add_argument("--rate", type=float, default=10.0, help="events per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds")
    p.add_argument("--count", type=int, default=0, help="stop after this many (0: no limit)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per publish")
    args = p.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
