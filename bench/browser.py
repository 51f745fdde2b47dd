"""The dashboard in Chromium under load: 1,000 tasks, 100 events/s (``make bench-browser``).

One run, on one machine, against one freshly created database:

1. drops and recreates the bench database, applies the migrations and starts
   ``taskstream serve --workers 1``;
2. creates ``--tasks`` tasks (1,000) through the API: most running at some percent with a
   message and a stage, some pending, some finished;
3. for every repetition, opens the dashboard in a new headless Chromium page (Debian's
   ``/usr/bin/chromium`` driven by Playwright, never a downloaded browser), waits until it is
   live with every task on screen, lets it settle, then for ``--duration`` seconds (45):

   * appends ``--rate`` events/s (100) through the real API, one request each, paced evenly:
     ``progress`` events on running tasks (percent, done/total, message, stage), a ``log`` now
     and then, and each second one task succeeds and a new one is created, so rows are added,
     re-filtered and re-counted as well as repainted;
   * records, in the page, every long task (``PerformanceObserver``, entry type ``longtask``:
     a main-thread task of 50 ms or more) and, from the DevTools protocol, the renderer's total
     task time (``Performance.getMetrics`` ``TaskDuration``, which counts the short tasks too)
     and its JS heap;
   * measures how late events reach the page: an EventSource listener added before the page's
     own scripts (``add_init_script``) compares each event's ``time`` with the page's clock
     (same machine, same clock);

4. prints the medians as a markdown table and writes them into ``docs/performance.md``, with
   the target: long tasks take less than 50 % of the main thread's wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import append
import httpx

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DOCS = ROOT / "docs" / "performance.md"
TENANT = "bench"
BEGIN_MARK = "<!-- BEGIN bench/browser.py results (generated; edit the text around it) -->"
END_MARK = "<!-- END bench/browser.py results -->"
SECTION_TITLE = "## The dashboard in a browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
]
TARGET_LONGTASK_PCT = 50.0
KINDS = ["import", "report", "thumbnail", "backup", "etl"]
STAGES = ["download", "transform", "upload"]

# Added to the page before its own scripts: long tasks, and how late events arrive.
# Each EventSource gets one more listener per event type, which reads the event's time with a
# regular expression rather than a second JSON.parse, to add as little work as it can.
INSTRUMENT = """
(() => {
  const bench = (window.__bench = { longtasks: [], lags: [], events: 0, on: false });
  new PerformanceObserver((list) => {
    if (!bench.on) return;
    for (const entry of list.getEntries()) bench.longtasks.push(entry.duration);
  }).observe({ type: "longtask" });
  const TYPES = ["created", "started", "progress", "log", "succeeded", "failed", "cancelled",
                 "cancel_requested"];
  const TIME = /"time":"([^"]+)"/;
  const Original = window.EventSource;
  window.EventSource = class extends Original {
    constructor(...args) {
      super(...args);
      for (const type of TYPES) {
        this.addEventListener(type, (message) => {
          if (!bench.on) return;
          bench.events += 1;
          const found = TIME.exec(message.data);
          if (found) bench.lags.push(Date.now() - Date.parse(found[1]));
        });
      }
    }
  };
})();
"""


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class BrowserRun:
    """One repetition: one fresh page, ``seconds`` of load."""

    repeat: int
    viewport: str
    tasks: int  # rows on the page when the window opened
    load_s: float  # page open to live with every row
    seconds: float
    appended: int
    received: int  # events the page's EventSource delivered in the window
    longtasks: int
    longtask_ms: float  # their total duration
    longest_ms: float
    task_ms: float  # the renderer's total task time (DevTools TaskDuration)
    script_ms: float
    layout_style_ms: float
    lag_p50_ms: float
    lag_p99_ms: float
    heap_mib: float
    machine_busy_pct: float

    @property
    def longtask_pct(self) -> float:
        return 100 * self.longtask_ms / (self.seconds * 1000)

    @property
    def busy_pct(self) -> float:
        return 100 * self.task_ms / (self.seconds * 1000)

    @property
    def received_per_s(self) -> float:
        return self.received / self.seconds

    @property
    def appended_per_s(self) -> float:
        return self.appended / self.seconds


def median(runs: Sequence[BrowserRun], name: str) -> float:
    return float(statistics.median(getattr(run, name) for run in runs))


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


# --------------------------------------------------------------------------------------------
# The load
# --------------------------------------------------------------------------------------------


class Workload:
    """The tenant's tasks as the bench's workers see them, and the events it appends."""

    def __init__(self, client: httpx.AsyncClient, seed: int = 7) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.running: dict[str, float] = {}  # task id -> percent
        self.created = 0
        self.appended = 0
        self.failures = 0

    async def create(self) -> str:
        self.created += 1
        kind = KINDS[self.created % len(KINDS)]
        response = await self.client.post(
            "/v1/tasks",
            json={
                "id": f"bench-{self.created:05d}",
                "kind": kind,
                "title": f"{kind.title()} job #{self.created}",
                "metadata": {"owner": f"team-{self.created % 7}"},
            },
        )
        response.raise_for_status()
        task_id: str = response.json()["id"]
        return task_id

    async def seed(self, tasks: int) -> None:
        """``tasks`` tasks: 85 % running, 5 % pending, the rest finished."""
        ids = []
        for _ in range(tasks):
            ids.append(await self.create())
        items: list[dict[str, Any]] = []
        for number, task_id in enumerate(ids):
            share = number % 100
            if share < 5:
                continue  # pending
            percent = round(self.rng.uniform(1, 90), 1)
            items.append({"task_id": task_id, "type": "started", "data": {"worker": "w-1"}})
            items.append({"task_id": task_id, "type": "progress", "data": self.progress(percent)})
            if share < 90:
                self.running[task_id] = percent
            elif share < 97:
                items.append({"task_id": task_id, "type": "succeeded", "data": {}})
            else:
                error = {"message": "upstream timed out", "code": "E_TIMEOUT"}
                items.append({"task_id": task_id, "type": "failed", "data": {"error": error}})
        for start in range(0, len(items), 1000):
            response = await self.client.post(
                "/v1/events/batch", json={"events": items[start : start + 1000]}
            )
            response.raise_for_status()

    def progress(self, percent: float) -> dict[str, Any]:
        done = int(percent * 10)
        stage = STAGES[min(2, int(percent // 34))]
        return {
            "percent": percent,
            "done": done,
            "total": 1000,
            "message": f"processed {done} of 1000 items",
            "stage": stage,
        }

    async def one(self, number: int, rate: float) -> None:
        """The ``number``-th event of the window: each second one task succeeds and one is
        created, 3 % are log lines, the rest progress."""
        try:
            slot = number % max(1, round(rate))
            if slot == 0 and self.running:
                task_id = self.rng.choice(list(self.running))
                del self.running[task_id]
                await self.append(task_id, "succeeded", {"result": {"rows": 1000}})
            elif slot == 1:
                task_id = await self.create()
                self.appended += 1
                self.running[task_id] = 0.0
            else:
                task_id = self.rng.choice(list(self.running))
                if self.rng.random() < 0.03:
                    data = {"level": "info", "message": f"chunk {number} written"}
                    await self.append(task_id, "log", data)
                else:
                    percent = min(99.9, round(self.running[task_id] + self.rng.uniform(0.1, 2), 1))
                    self.running[task_id] = percent
                    await self.append(task_id, "progress", self.progress(percent))
        except (httpx.HTTPError, KeyError, IndexError):
            self.failures += 1

    async def append(self, task_id: str, event_type: str, data: dict[str, Any]) -> None:
        response = await self.client.post(
            f"/v1/tasks/{task_id}/events", json={"type": event_type, "data": data}
        )
        if response.status_code == 201:
            self.appended += 1
        else:
            self.failures += 1  # a progress that lost the race with the task's success

    async def run(self, seconds: float, rate: float) -> None:
        """Events at ``rate`` per second, each on time whatever the previous ones took."""
        started = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        for number in range(int(seconds * rate)):
            delay = started + number / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.one(number, rate))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending)


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


async def measure(
    browser: Any,
    base_url: str,
    token: str,
    workload: Workload,
    args: argparse.Namespace,
    repeat: int,
    viewport: tuple[int, int],
) -> BrowserRun:
    context = await browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.add_init_script(INSTRUMENT)
        cdp = await context.new_cdp_session(page)
        await cdp.send("Performance.enable")
        opened = time.monotonic()
        await page.goto(f"{base_url}/#token={token}")
        state = page.locator("#connection")
        await state.and_(page.locator('[data-state="live"]')).wait_for(timeout=60_000)
        expected = len(workload.running) // 2
        # Every task on the page (a locator: the page's policy forbids evaluated strings).
        await page.locator(".task-row").nth(expected).wait_for(state="attached", timeout=60_000)
        load_s = time.monotonic() - opened
        await asyncio.sleep(args.settle)
        rows = await page.evaluate("document.querySelectorAll('.task-row').length")
        before = await metrics(cdp)
        await page.evaluate("window.__bench.on = true")
        busy_before = append.system_ticks()
        window_started = time.monotonic()
        appended_before = workload.appended
        await workload.run(args.duration, args.rate)
        await asyncio.sleep(0.5)  # the last events reach the page
        seconds = time.monotonic() - window_started
        busy_after = append.system_ticks()
        bench = await page.evaluate("window.__bench.on = false, window.__bench")
        after = await metrics(cdp)
        if errors:
            raise RuntimeError(f"the page failed: {errors}")
        state_text = await state.get_attribute("data-state")
        if state_text != "live":
            raise RuntimeError(f"the page is {state_text} at the end of the window")
        busy_ticks = busy_after[0] - busy_before[0]
        total_ticks = max(busy_after[1] - busy_before[1], 1)
        longtasks = [float(duration) for duration in bench["longtasks"]]
        return BrowserRun(
            repeat=repeat,
            viewport=f"{viewport[0]}x{viewport[1]}",
            tasks=int(rows),
            load_s=load_s,
            seconds=seconds,
            appended=workload.appended - appended_before,
            received=int(bench["events"]),
            longtasks=len(longtasks),
            longtask_ms=sum(longtasks),
            longest_ms=max(longtasks, default=0.0),
            task_ms=1000 * (after["TaskDuration"] - before["TaskDuration"]),
            script_ms=1000 * (after["ScriptDuration"] - before["ScriptDuration"]),
            layout_style_ms=1000
            * (
                after["LayoutDuration"]
                + after["RecalcStyleDuration"]
                - before["LayoutDuration"]
                - before["RecalcStyleDuration"]
            ),
            lag_p50_ms=percentile(bench["lags"], 0.5),
            lag_p99_ms=percentile(bench["lags"], 0.99),
            heap_mib=after["JSHeapUsedSize"] / 2**20,
            machine_busy_pct=busy_ticks / total_ticks * 100 * (os.cpu_count() or 1),
        )
    finally:
        await context.close()


async def metrics(cdp: Any) -> dict[str, float]:
    answer = await cdp.send("Performance.getMetrics")
    return {item["name"]: float(item["value"]) for item in answer["metrics"]}


def describe(run: BrowserRun) -> str:
    return (
        f"run {run.repeat + 1} {run.viewport}: {run.tasks} rows, {run.appended_per_s:.0f} "
        f"events/s appended, {run.received_per_s:.0f}/s received; long tasks "
        f"{run.longtasks} ({run.longtask_pct:.1f} % of the time, longest "
        f"{run.longest_ms:.0f} ms); main thread busy {run.busy_pct:.1f} %; "
        f"lag p50 {run.lag_p50_ms:.0f} ms p99 {run.lag_p99_ms:.0f} ms"
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def render_table(runs: Sequence[BrowserRun]) -> str:
    rows = [
        "| viewport | tasks | events/s appended / received | long tasks per run "
        "| long-task time, % of wall (min-max) | longest ms | main-thread busy % "
        "| script % | style+layout % | delivery lag p50 / p99 ms | JS heap MiB "
        "| machine busy |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for viewport in dict.fromkeys(run.viewport for run in runs):
        mine = [run for run in runs if run.viewport == viewport]
        share = [run.longtask_pct for run in mine]
        wall = median(mine, "seconds") * 1000
        rows.append(
            f"| {viewport} | {median(mine, 'tasks'):,.0f} "
            f"| {median(mine, 'appended_per_s'):.0f} / {median(mine, 'received_per_s'):.0f} "
            f"| {median(mine, 'longtasks'):.0f} "
            f"| **{median(mine, 'longtask_pct'):.1f}** ({min(share):.1f}-{max(share):.1f}) "
            f"| {median(mine, 'longest_ms'):.0f} | {median(mine, 'busy_pct'):.1f} "
            f"| {100 * median(mine, 'script_ms') / wall:.1f} "
            f"| {100 * median(mine, 'layout_style_ms') / wall:.1f} "
            f"| {median(mine, 'lag_p50_ms'):.0f} / {median(mine, 'lag_p99_ms'):.0f} "
            f"| {median(mine, 'heap_mib'):.1f} | {median(mine, 'machine_busy_pct'):.0f} % |"
        )
    return "\n".join(rows)


def render_targets(runs: Sequence[BrowserRun], target: float) -> str:
    lines = ["| target | measured | ratio | |", "|---|---|--:|---|"]
    for viewport in dict.fromkeys(run.viewport for run in runs):
        mine = [run for run in runs if run.viewport == viewport]
        value = median(mine, "longtask_pct")
        lines.append(
            f"| {viewport}, {median(mine, 'tasks'):,.0f} tasks, "
            f"{median(mine, 'appended_per_s'):.0f} events/s: long tasks < {target:g} % of the "
            f"main thread's wall time (median of {len(mine)}) | {value:.1f} % "
            f"| {value / target:.2f}x of the limit | {append.verdict(value < target)} |"
        )
    return "\n".join(lines)


def render_report(
    runs: Sequence[BrowserRun], args: argparse.Namespace, info: Mapping[str, str]
) -> str:
    lines = [
        f"Command: `{info['command']}`",
        "",
        f"- Date: {info['date']}" + (f"; code: commit {info['code']}" if info.get("code") else ""),
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, {info['os']}; "
        f"{info.get('pg_version', 'PostgreSQL ?')}; Python {info['python']}; "
        f"{info.get('chromium', 'Chromium ?')} headless, Playwright {info.get('playwright', '?')}."
        f" Before the run the machine was {info.get('idle_busy', '?')} busy "
        f"(of {int(info['nproc']) * 100} %); the last column is the whole machine during the "
        "window (Chromium, the service, Postgres and the load generator share it).",
        "- Service: `taskstream serve --workers 1` on the same machine, its database with "
        "`synchronous_commit = off` (the page is measured here, not the append path). "
        f"Tasks: {args.tasks:,} "
        "created first (85 % running at some percent, 5 % pending, the rest finished); during "
        f"the window {args.rate:g} events/s, one request each, paced: progress (percent, "
        "done/total, message, stage) on running tasks, 3 % log lines, and each second one task "
        "succeeds and a new one is created.",
        f"- Page: a fresh one per run at {', '.join(args.viewports)}, opened with the token in "
        f"its fragment; measured for {args.duration:g} s once it was live with every row and "
        f"had rested {args.settle:g} s. *Long-task time* is the sum of the `longtask` entries' "
        "durations (tasks of 50 ms or more) over the wall time: the target. *Main-thread busy* "
        "is the renderer's whole task time (DevTools `Performance.getMetrics` TaskDuration, "
        "short tasks included); script and style+layout are parts of it. *Delivery lag* is "
        "the page's clock when an event arrived minus the event's `time`.",
        f"- {args.repeats} repetition(s); medians shown.",
        "",
        render_table(runs),
        "",
        render_targets(runs, args.target_pct),
    ]
    return "\n".join(lines).rstrip() + "\n"


SECTION_TEXT = f"""{SECTION_TITLE}

`bench/browser.py` (`make bench-browser`; `make bench` runs it last) checks that the dashboard
at `/` stays smooth with 1,000 tasks and 100 events/s. It creates the tasks through the API,
opens the page in headless Chromium (Debian's, driven by Playwright), waits until it is live
with every row, then appends 100 events/s for 45 s while the page records its long tasks
(`PerformanceObserver`, `longtask`) and DevTools reports the renderer's total task time. The
target is that long tasks take less than 50 % of the main thread's wall time.

Why it stays cheap: each event only updates the task's state in memory and marks its row; one
`requestAnimationFrame` callback then writes the changed cells of the marked rows (a frame
holds one or two events at this rate), and rows are `content-visibility: auto`, so the rows
off screen cost no style, layout or paint however often they change. The list's bars have no
CSS transition: with one on every bar, the main thread restyled each frame while any bar
moved. Elapsed and ETA move once a second, in one pass. The page asks for `?progress=latest`,
so a page that falls behind gets a task's newest progress rather than every step.

Run it with `uv run python bench/browser.py` (about four minutes a viewport; `--quick` for a
short smoke run that leaves this file alone, `--repeats`, `--duration`, `--rate`, `--tasks`,
`--viewports 1280x900 390x844`, `--no-docs`, `--json FILE`). `--screenshots DIR` photographs
a small demo tenant instead (the pictures of the README and docs/frontend.md).

### Latest browser results
"""


def write_docs(path: Path, report: str) -> None:
    append.replace_block(path, report, begin=BEGIN_MARK, end=END_MARK, section=SECTION_TEXT)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="The dashboard's main-thread load in Chromium with 1,000 tasks, 100 events/s.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 10 s, 1 repetition, no docs")
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--rate", type=float, default=100.0, help="events per second")
    p.add_argument("--duration", type=float, default=45.0, help="seconds measured per run")
    p.add_argument("--settle", type=float, default=3.0, help="seconds of rest once loaded")
    p.add_argument("--repeats", type=int, default=3, help="repetitions (medians are reported)")
    p.add_argument(
        "--viewports", nargs="+", default=["1280x900"], help="WIDTHxHEIGHT, one page per run each"
    )
    p.add_argument("--target-pct", type=float, default=TARGET_LONGTASK_PCT)
    p.add_argument(
        "--server-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="Postgres server to use (its database part is ignored)",
    )
    p.add_argument("--database", default="taskstream_browser_bench", help="bench database: DROPPED")
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
    p.add_argument("--output", type=Path, default=None, help="markdown file to update")
    p.add_argument("--no-docs", action="store_true", help="do not write the markdown file")
    p.add_argument("--json", type=Path, default=None, help="also write every run as JSON here")
    p.add_argument(
        "--screenshots",
        type=Path,
        default=None,
        metavar="DIR",
        help="instead of measuring, photograph a small demo tenant into DIR (docs/screenshots)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 10.0)
        args.repeats = 1
    if args.no_docs:
        args.output = None
    elif args.output is None and not args.quick:
        args.output = DOCS
    for viewport in args.viewports:
        if not all(part.isdigit() for part in viewport.split("x", 1)) or "x" not in viewport:
            p.error(f"--viewports: {viewport!r} is not WIDTHxHEIGHT")
    return args


def describe_run(argv: Sequence[str] | None) -> dict[str, str]:
    return append.run_description("browser.py", argv)


async def bench(args: argparse.Namespace, base_url: str, secret: str) -> list[BrowserRun]:
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.async_api import async_playwright

    from service.tokens import mint

    reader = mint(secret, sub="bench-page", tenant=TENANT, scopes="tasks:read", ttl_seconds=86400)
    writer = mint(
        secret, sub="bench-writer", tenant=TENANT, scopes="tasks:write", ttl_seconds=86400
    )
    headers = {"Authorization": f"Bearer {writer}"}
    # Enough connections that a stall of the database (other tenants of the machine) does not
    # hold back the requests behind it.
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    runs: list[BrowserRun] = []
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=30, limits=limits
    ) as client:
        workload = Workload(client)
        print(f"creating {args.tasks:,} tasks", flush=True)
        await workload.seed(args.tasks)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
            for repeat in range(args.repeats):
                for viewport in args.viewports:
                    width, height = (int(part) for part in viewport.split("x"))
                    run = await measure(
                        browser, base_url, reader, workload, args, repeat, (width, height)
                    )
                    print(describe(run), flush=True)
                    runs.append(run)
            await browser.close()
    if workload.failures:
        print(f"warning: {workload.failures} appends failed", flush=True)
    return runs


# --------------------------------------------------------------------------------------------
# Screenshots for the docs (--screenshots DIR)
# --------------------------------------------------------------------------------------------

DEMO: list[tuple[str, str, str, list[tuple[str, dict[str, Any]]]]] = [
    ("reindex", "search", "Re-index the product catalogue", []),
    (
        "orders-backup",
        "backup",
        "Nightly backup of orders-db",
        [
            ("started", {"worker": "backup-2"}),
            ("progress", {"done": 44, "total": 80, "stage": "upload", "message": "part 44 of 80"}),
            ("progress", {"done": 46, "total": 80, "message": "part 46 of 80"}),
            ("progress", {"done": 48, "total": 80, "message": "part 48 of 80"}),
        ],
    ),
    (
        "revenue-2026-11",
        "report",
        "Monthly revenue report",
        [
            ("started", {"worker": "report-1"}),
            ("progress", {"percent": 31, "stage": "render", "message": "page 37 of 120"}),
            ("progress", {"percent": 33, "message": "page 40 of 120"}),
            ("progress", {"percent": 35, "message": "page 42 of 120"}),
        ],
    ),
    (
        "transcode-4411",
        "video",
        "Transcode upload #4411",
        [
            ("started", {"worker": "gpu-3"}),
            ("progress", {"percent": 51, "stage": "encode", "message": "1080p, pass 2"}),
            ("cancel_requested", {"reason": "the user deleted the upload"}),
        ],
    ),
    (
        "etl-events",
        "etl",
        "Events to the warehouse",
        [
            ("started", {"worker": "etl-1"}),
            ("progress", {"percent": 63, "stage": "load", "message": "batch 19 of 30"}),
            (
                "failed",
                {"error": {"message": "upstream timed out after 30 s", "code": "E_TIMEOUT"}},
            ),
        ],
    ),
    (
        "thumbs-2026-11",
        "thumbnail",
        "Thumbnails for November",
        [
            ("started", {"worker": "img-4"}),
            (
                "progress",
                {"done": 400, "total": 4000, "stage": "download", "message": "400 images"},
            ),
            ("progress", {"done": 410, "total": 4000, "message": "410 images"}),
            ("progress", {"done": 420, "total": 4000, "message": "420 images"}),
        ],
    ),
    (
        "import-customers",
        "import",
        "Import customers.csv",
        [
            ("started", {"worker": "import-1"}),
            ("progress", {"done": 12000, "total": 12000, "stage": "commit", "message": "all rows"}),
            ("log", {"level": "info", "message": "12,000 rows, 3 duplicates merged"}),
            ("succeeded", {"result": {"rows": 12000, "merged": 3}}),
        ],
    ),
    (
        "media-backup",
        "backup",
        "Backup of the media bucket",
        [
            ("started", {"worker": "backup-1"}),
            ("progress", {"percent": 12, "stage": "scan"}),
            ("cancelled", {"reason": "superseded by a newer run"}),
        ],
    ),
]
SHOTS = {
    "dashboard-desktop-light.png": ((1280, 640), "light"),
    "dashboard-desktop-dark.png": ((1280, 640), "dark"),
    "dashboard-phone-light.png": ((390, 844), "light"),
    "dashboard-phone-dark.png": ((390, 844), "dark"),
}


async def screenshots(base_url: str, secret: str, directory: Path) -> None:
    """A small tenant of tasks in every state, photographed at desktop and phone widths."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.async_api import async_playwright

    from service.tokens import mint

    scopes = ("tasks:read", "tasks:write")
    token = mint(secret, sub="ada", tenant="demo", scopes=scopes, ttl_seconds=3600)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:

        async def work(task_id: str, events: list[tuple[str, dict[str, Any]]]) -> None:
            for event_type, data in events:
                # Progress two seconds apart, as a worker's, so that ETAs have a pace to go on.
                await asyncio.sleep(2 if event_type == "progress" else 0.2)
                answer = await client.post(
                    f"/v1/tasks/{task_id}/events", json={"type": event_type, "data": data}
                )
                answer.raise_for_status()

        for task_id, kind, title, _ in DEMO:  # one after the other: the listing's order
            body = {"id": task_id, "kind": kind, "title": title}
            (await client.post("/v1/tasks", json=body)).raise_for_status()
        await asyncio.gather(*(work(task_id, events) for task_id, _, _, events in DEMO))
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
            for name, ((width, height), scheme) in SHOTS.items():
                context = await browser.new_context(
                    viewport={"width": width, "height": height}, color_scheme=scheme
                )
                page = await context.new_page()
                await page.goto(f"{base_url}/#token={token}")
                await page.locator('#connection[data-state="live"]').wait_for()
                await page.locator(".task-row").nth(len(DEMO) - 1).wait_for()
                await asyncio.sleep(1)  # the bars' transitions end
                await page.screenshot(path=str(directory / name))
                print(f"wrote {directory / name}", flush=True)
                if name == "dashboard-desktop-light.png":
                    await page.get_by_role("button", name="Nightly backup of orders-db").click()
                    await page.locator("#log li").nth(4).wait_for()
                    await asyncio.sleep(0.5)
                    await page.screenshot(path=str(directory / "dashboard-detail-light.png"))
                    print(f"wrote {directory / 'dashboard-detail-light.png'}", flush=True)
                await context.close()
            await browser.close()


def versions() -> dict[str, str]:
    import importlib.metadata
    import subprocess

    chromium = subprocess.run(
        [str(CHROMIUM), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "chromium": chromium.removesuffix(" built on Debian GNU/Linux 12 (bookworm)").strip(),
        "playwright": importlib.metadata.version("playwright"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    pg = append.Pg.from_url(args.server_url, args.database)
    lock = append.claim_database(pg)
    info = describe_run(argv)
    info.update(versions())
    print(f"bench database {pg.database!r} on {pg.host}:{pg.port}: recreating", flush=True)
    pg.recreate()
    # This bench measures the page, not the append path (bench/append.py does): commits need
    # not wait for the WAL to reach the disk, so that the load keeps its pace on a busy disk.
    pg.psql(f'ALTER DATABASE "{pg.database}" SET synchronous_commit = off', database="postgres")
    info["pg_version"] = "PostgreSQL " + pg.psql("SHOW server_version")
    secret = secrets.token_hex(32)
    env = {key: value for key, value in os.environ.items() if not key.startswith("TASKSTREAM_")}
    env.update(TASKSTREAM_DATABASE_URL=pg.url(), TASKSTREAM_JWT_SECRET=secret)
    workdir = Path(tempfile.mkdtemp(prefix="taskstream-browser-"))
    port = append.free_port()
    command = shlex.split(args.server_cmd.format(host="127.0.0.1", port=port))
    server = append.Server(command + shlex.split(args.server_args), env, workdir / "serve.log")
    runs: list[BrowserRun] = []
    try:
        append.migrate(argparse.Namespace(migrate_cmd=args.migrate_cmd), env)
        server.start()
        server.wait_ready("127.0.0.1", port, args.ready_timeout)
        if args.screenshots:
            args.screenshots.mkdir(parents=True, exist_ok=True)
            asyncio.run(screenshots(f"http://127.0.0.1:{port}", secret, args.screenshots))
        else:
            runs = asyncio.run(bench(args, f"http://127.0.0.1:{port}", secret))
    finally:
        server.stop()
        with contextlib.suppress(RuntimeError):
            pg.drop()
    if args.screenshots:
        shutil.rmtree(workdir, ignore_errors=True)
        lock.close()
        return 0
    document = {"info": info, "runs": [asdict(run) for run in runs]}
    append.publish_report(render_report(runs, args, info), args, document, write_docs)
    shutil.rmtree(workdir, ignore_errors=True)
    lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
