"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

Never Playwright's own browser download: Chromium comes from the system (``.ci/run`` installs
the Debian package); without ``/usr/bin/chromium`` these tests are skipped, saying so.
Waits are generous (``WAIT_MS``): how fast the page is belongs to bench/browser.py, not here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.helpers import Api, Service
from tests.processes import TASKSTREAM, Server, free_port, start_server
from tests.sse import wait_ready

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
]
WAIT_MS = 30_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's Chromium is not installed (/usr/bin/chromium): apt-get install chromium",
)

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
from playwright.async_api import (  # noqa: E402
    Browser,
    ConsoleMessage,
    Page,
    Request,
    async_playwright,
    expect,
)

expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    playwright = await async_playwright().start()
    try:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        await browser.close()
    finally:
        await playwright.stop()


class Dashboard:
    """One browser tab on the dashboard, and what it said on its console."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.network_errors: list[str] = []
        self.streams: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("request", self._request)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        # What Chromium itself logs when a request fails (a server that is down, say).
        if "Failed to load resource" in message.text or "net::ERR_" in message.text:
            self.network_errors.append(message.text)
        else:
            self.errors.append(message.text)

    def _request(self, request: Request) -> None:
        if "/v1/stream" in request.url:
            self.streams.append(request.url)

    async def open(self, base_url: str, token: str | None) -> None:
        await self.page.goto(f"{base_url}/" + (f"#token={token}" if token else ""))
        if token:
            await self.wait_state("live")

    async def wait_state(self, state: str) -> None:
        await expect(self.page.locator("#connection")).to_have_attribute("data-state", state)

    def row(self, task_id: str) -> Any:
        return self.page.locator(f'.task-row[data-id="{task_id}"]')

    async def wait_percent(self, task_id: str, percent: int) -> None:
        meter = self.row(task_id).locator(".meter")
        await expect(meter).to_have_attribute("aria-valuenow", str(percent))
        await expect(self.row(task_id).locator(".percent")).to_have_text(f"{percent}%")

    async def wait_status(self, task_id: str, status: str) -> None:
        await expect(self.row(task_id).locator(".badge")).to_have_text(status)

    async def row_ids(self) -> list[str]:
        ids: list[str] = await self.page.locator(".task-row").evaluate_all(
            "rows => rows.map(row => row.dataset.id)"
        )
        return ids

    def assert_no_console_errors(self, *, network_ok: bool = False) -> None:
        assert self.errors == [], self.errors
        if not network_ok:
            assert self.network_errors == [], self.network_errors


@pytest.fixture
async def dashboard(browser: Browser) -> AsyncIterator[Dashboard]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield Dashboard(await context.new_page())
    finally:
        await context.close()


async def progress(api: Api, task_id: str, percent: float, **data: Any) -> None:
    await api.event(task_id, "progress", {"percent": percent, **data})


# ------------------------------------------------------------------------------ the list


async def test_the_page_loads_and_a_task_appears_and_its_bar_moves(
    service: Service, dashboard: Dashboard
) -> None:
    api = service.api
    await api.create_task(id="listed", kind="report", title="Listed before the page")
    await progress(api, "listed", 40, message="reading")
    await dashboard.open(service.base_url, service.token())
    await dashboard.wait_percent("listed", 40)
    await expect(dashboard.row("listed").locator(".c-message")).to_have_text("reading")

    await api.create_task(id="live-1", kind="build", title="Created while watching")
    await expect(dashboard.row("live-1").locator(".title")).to_have_text("Created while watching")
    await dashboard.wait_status("live-1", "pending")
    await progress(api, "live-1", 10, stage="compile")
    await dashboard.wait_percent("live-1", 10)
    await dashboard.wait_status("live-1", "running")
    await expect(dashboard.row("live-1").locator(".c-stage")).to_have_text("compile")
    await api.event("live-1", "progress", {"done": 3, "total": 4})
    await dashboard.wait_percent("live-1", 75)
    await api.event("live-1", "succeeded", {"result": {"ok": True}})
    await dashboard.wait_status("live-1", "succeeded")
    await dashboard.wait_percent("live-1", 100)
    assert await dashboard.row_ids() == ["live-1", "listed"], "newest first"
    await expect(dashboard.page.locator("#summary")).to_contain_text("2 tasks")

    # One EventSource, on /v1/stream, resumed from the listing and asking for thinned progress.
    assert len(dashboard.streams) == 1, dashboard.streams
    assert "progress=latest" in dashboard.streams[0]
    assert "last_event_id=" in dashboard.streams[0]
    dashboard.assert_no_console_errors()


async def test_another_tenant_s_token_shows_none_of_these_tasks(
    service: Service, dashboard: Dashboard
) -> None:
    mine, theirs = service.as_(tenant="t1"), service.as_(tenant="t2")
    await mine.create_task(id="t1-task", title="of tenant one")
    await dashboard.open(service.base_url, service.token(tenant="t2"))
    await expect(dashboard.page.locator("#who")).to_contain_text("tenant t2")
    await mine.create_task(id="t1-later", title="also of tenant one")
    await progress(mine, "t1-task", 50)
    await theirs.create_task(id="t2-task", title="of tenant two")
    # The other tenant's own task arrives live, after the events of tenant one were written.
    await expect(dashboard.row("t2-task")).to_be_visible()
    assert await dashboard.row_ids() == ["t2-task"]
    await expect(dashboard.page.get_by_text("of tenant one")).to_have_count(0)
    dashboard.assert_no_console_errors()


async def test_filters_by_status_and_kind_follow_live_changes(
    service: Service, dashboard: Dashboard
) -> None:
    api = service.api
    for task_id, kind in [("a1", "alpha"), ("a2", "alpha"), ("b1", "beta")]:
        await api.create_task(id=task_id, kind=kind)
    await progress(api, "a1", 5)
    await dashboard.open(service.base_url, service.token())
    page = dashboard.page

    await page.get_by_label("Status").select_option("running")
    await expect(page.locator(".task-row:visible")).to_have_count(1)
    await expect(dashboard.row("a1")).to_be_visible()
    await progress(api, "b1", 5)  # b1 starts running: it joins the filtered list
    await expect(dashboard.row("b1")).to_be_visible()
    await expect(page.locator("#summary")).to_contain_text("showing 2 of 3")

    await page.get_by_label("Kind").select_option("beta")
    await expect(page.locator(".task-row:visible")).to_have_count(1)
    await expect(dashboard.row("b1")).to_be_visible()
    await api.event("b1", "failed", {"error": {"message": "no"}})  # leaves "running"
    await expect(page.locator(".task-row:visible")).to_have_count(0)
    await expect(page.locator("#empty")).to_have_text("No task matches the filters.")

    await page.get_by_label("Status").select_option("")
    await page.get_by_label("Kind").select_option("")
    await expect(page.locator(".task-row:visible")).to_have_count(3)
    dashboard.assert_no_console_errors()


# ------------------------------------------------------------------------------ the detail


async def test_the_detail_shows_the_history_then_live_events_and_cancels(
    service: Service, dashboard: Dashboard
) -> None:
    api = service.api
    await api.create_task(id="job", kind="export", title="The export")
    await api.event("job", "started", {"worker": "w-7"})
    await progress(api, "job", 25)
    await api.event("job", "log", {"level": "warning", "message": "slow disk"})
    await dashboard.open(service.base_url, service.token())
    page = dashboard.page

    await dashboard.row("job").get_by_role("button", name="The export").click()
    dialog = page.get_by_role("dialog", name="The export")
    await expect(dialog).to_be_visible()
    log = dialog.locator("#log li")
    await expect(log).to_have_count(4)
    await expect(log.nth(3)).to_contain_text("warning: slow disk")

    await progress(api, "job", 60, message="halfway")
    await expect(log).to_have_count(5)
    await expect(log.nth(4)).to_contain_text("60% halfway")
    await expect(dialog.locator("#detail-percent")).to_have_text("60%")
    await expect(dialog.locator("#detail-live")).to_contain_text("running, 60%")

    await dialog.get_by_role("button", name="Request cancellation").click()
    await expect(log).to_have_count(6)
    await expect(log.nth(5)).to_contain_text("cancel_requested")
    await expect(dialog.locator("#cancel")).to_be_disabled()
    assert (await api.task("job"))["cancel_requested"] is True
    await expect(dashboard.row("job").locator(".flag")).to_be_visible()

    await api.event("job", "cancelled", {"reason": "as asked"})
    await expect(dialog.locator("#detail-status")).to_have_text("cancelled")
    await expect(dialog.locator("#cancel")).to_be_hidden()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    dashboard.assert_no_console_errors()


async def test_cancel_is_offered_only_to_a_token_that_may_cancel(
    service: Service, dashboard: Dashboard
) -> None:
    await service.api.create_task(id="job", title="Someone's job")
    await dashboard.open(service.base_url, service.token(scopes="tasks:read"))
    await dashboard.row("job").get_by_role("button").click()
    dialog = dashboard.page.get_by_role("dialog")
    await expect(dialog.locator("#log li")).to_have_count(1)
    await expect(dialog.locator("#cancel")).to_be_hidden()
    dashboard.assert_no_console_errors()


async def test_the_keyboard_reaches_everything(service: Service, dashboard: Dashboard) -> None:
    await service.api.create_task(id="job", title="Reachable")
    await dashboard.open(service.base_url, service.token())
    page = dashboard.page
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to the tasks")).to_be_focused()
    opener = dashboard.row("job").get_by_role("button", name="Reachable")
    await opener.focus()
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Reachable")
    await expect(dialog).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(opener).to_be_focused()
    dashboard.assert_no_console_errors()


# ------------------------------------------------------------------------------ the module

FOLLOW_ONE = """
async ([taskId, options]) => {
  const { watchTask } = await import("/static/taskstream.js");
  return new Promise((resolve) => {
    const seen = [];
    const watch = watchTask(taskId, {
      ...options,
      onSnapshot: (task) => {
        seen.push(["snapshot", task.status, task.percent]);
        window.snapshotSeen?.();
      },
      on: { progress: (event) => seen.push(["progress", event.data.percent]) },
      onEvent: (event) => seen.push(["event", event.type, event.seq]),
      onEnd: (task) => resolve({ seen, task, state: watch.state, last: watch.lastEventId }),
    });
  });
}
"""


async def test_the_module_follows_one_task_resumes_and_closes_at_the_end(
    service: Service, dashboard: Dashboard
) -> None:
    api, token = service.api, service.token(scopes="tasks:read")
    await api.create_task(id="solo", kind="k")
    first = await api.event("solo", "progress", {"percent": 10})
    page = dashboard.page
    snapshot_seen = asyncio.Event()
    await page.expose_function("snapshotSeen", snapshot_seen.set)
    await dashboard.open(service.base_url, None)

    following = asyncio.ensure_future(page.evaluate(FOLLOW_ONE, ["solo", {"token": token}]))
    await asyncio.wait_for(snapshot_seen.wait(), WAIT_MS / 1000)
    middle = await api.event("solo", "progress", {"percent": 50})
    last = await api.event("solo", "succeeded", {})
    result = await asyncio.wait_for(following, WAIT_MS / 1000)
    assert result["seen"] == [
        ["snapshot", "running", 10],
        ["progress", 50],
        ["event", "progress", middle["seq"]],
        ["event", "succeeded", last["seq"]],
    ]
    assert result["task"]["status"] == "succeeded" and result["task"]["percent"] == 100
    assert result["state"] == "closed" and result["last"] == last["seq"]

    # Resumed from a position: what came after it, then the end; no snapshot.
    resumed = await page.evaluate(
        FOLLOW_ONE, ["solo", {"token": token, "lastEventId": first["seq"]}]
    )
    assert [item[:2] for item in resumed["seen"]] == [
        ["progress", 50],
        ["event", "progress"],
        ["event", "succeeded"],
    ]
    # Resumed after the end: the service answers 204, and the module stops there.
    done = await page.evaluate(FOLLOW_ONE, ["solo", {"token": token, "lastEventId": last["seq"]}])
    assert done["seen"] == [] and done["state"] == "closed"
    dashboard.assert_no_console_errors(network_ok=True)  # Chromium logs the 204's EventSource


FOLLOW_MANY = """
async ([options, count]) => {
  const { watchTasks } = await import("/static/taskstream.js");
  return new Promise((resolve) => {
    const seen = [];
    const watch = watchTasks({
      ...options,
      onEvent: (event) => {
        seen.push([event.task_id, event.type]);
        if (seen.length === count) {
          watch.close();
          resolve(seen);
        }
      },
    });
  });
}
"""


async def test_the_module_follows_many_tasks_filtered_from_a_position(
    service: Service, dashboard: Dashboard
) -> None:
    api, token = service.api, service.token(scopes="tasks:read")
    listing = await api.list_tasks()
    await api.create_task(id="wanted", kind="wanted")
    await api.create_task(id="other", kind="other")
    await api.event("other", "progress", {"percent": 5})
    await api.event("wanted", "log", {"level": "info", "message": "x"})
    await dashboard.open(service.base_url, None)
    options = {"token": token, "kind": "wanted", "lastEventId": listing["as_of_seq"]}
    seen = await dashboard.page.evaluate(FOLLOW_MANY, [options, 2])
    assert seen == [["wanted", "created"], ["wanted", "log"]]
    dashboard.assert_no_console_errors()


# ------------------------------------------------------------------------------ the token


async def test_the_token_comes_from_the_fragment_or_the_form_and_stays_in_the_tab(
    service: Service, dashboard: Dashboard
) -> None:
    await service.api.create_task(id="job")
    page = dashboard.page
    await dashboard.open(service.base_url, None)
    form = page.get_by_role("region", name="Show a tenant's tasks")
    await expect(form).to_be_visible()
    token_field = page.get_by_label("Access token (JWT)")
    await token_field.fill("not-a-token")
    await token_field.press("Enter")
    await expect(page.locator("#token-error")).to_contain_text("not a taskstream token")
    await token_field.fill(service.token(scopes="tasks:write"))
    await token_field.press("Enter")
    await expect(page.locator("#token-error")).to_contain_text("tasks:read")
    await token_field.fill(service.token())
    await token_field.press("Enter")
    await dashboard.wait_state("live")
    await expect(dashboard.row("job")).to_be_visible()

    await page.reload()  # the token stays for the tab's session
    await dashboard.wait_state("live")
    await page.get_by_role("button", name="Change token").click()
    await expect(form).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0

    await dashboard.open(service.base_url, service.token())
    assert "token" not in page.url, "the token is taken out of the address bar"
    await expect(dashboard.row("job")).to_be_visible()
    dashboard.assert_no_console_errors()


async def test_an_expired_token_is_refused_with_a_reason(
    service: Service, dashboard: Dashboard
) -> None:
    await dashboard.open(service.base_url, None)
    await dashboard.page.goto(f"{service.base_url}/#token={service.token(ttl_seconds=-60)}")
    await expect(dashboard.page.locator("#token-error")).to_contain_text("expired")
    dashboard.assert_no_console_errors()


# ------------------------------------------------------------------------------ layout


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_a_phone_width_needs_no_sideways_scrolling(
    service: Service, browser: Browser, scheme: str
) -> None:
    await service.api.create_task(id="a-task-with-a-rather-long-identifier-0123456789", title="x")
    await progress(service.api, "a-task-with-a-rather-long-identifier-0123456789", 30, message="m")
    context = await browser.new_context(viewport={"width": 320, "height": 640}, color_scheme=scheme)
    try:
        dashboard = Dashboard(await context.new_page())
        await dashboard.open(service.base_url, service.token())
        await expect(dashboard.page.locator(".task-row")).to_have_count(1)
        widths = await dashboard.page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1] == 320, widths
        background = await dashboard.page.evaluate(
            "getComputedStyle(document.body).backgroundColor"
        )
        dark = background == "rgb(13, 17, 23)"
        assert dark == (scheme == "dark"), background
        dashboard.assert_no_console_errors()
    finally:
        await context.close()


# ------------------------------------------------------------------------------ restarts


def problem(status: int, code: str) -> dict[str, Any]:
    body = {"type": "about:blank", "title": code, "status": status, "detail": code, "code": code}
    return {"status": status, "json": body, "headers": {"Content-Type": "application/problem+json"}}


async def test_a_stream_refused_by_a_proxy_is_reopened_by_the_page(
    service: Service, dashboard: Dashboard
) -> None:
    """A browser's EventSource gives up for good on an answer that is not a 200 event stream
    (a proxy's 503, say); the page itself retries, backing off, and catches up."""
    await service.api.create_task(id="before", title="Listed")
    refusals: list[str] = []
    refused_thrice = asyncio.Event()

    async def refuse(route: Any) -> None:
        refusals.append(route.request.url)
        if len(refusals) >= 3:  # the EventSource's request, then the page's own retries
            refused_thrice.set()
        await route.fulfill(**problem(503, "not_ready"))

    await dashboard.page.route("**/v1/stream?*", refuse)
    await dashboard.open(service.base_url, None)
    await dashboard.page.goto(f"{service.base_url}/#token={service.token()}")
    await expect(dashboard.row("before")).to_be_visible()
    await asyncio.wait_for(refused_thrice.wait(), WAIT_MS / 1000)
    await expect(dashboard.page.locator("#connection")).to_have_attribute(
        "data-state", "reconnecting"
    )
    await progress(service.api, "before", 30)
    await service.api.create_task(id="during", title="Created while refused")
    await dashboard.page.unroute("**/v1/stream?*", refuse)
    await dashboard.wait_state("live")
    await dashboard.wait_percent("before", 30)
    await expect(dashboard.row("during")).to_be_visible()
    dashboard.assert_no_console_errors(network_ok=True)


async def test_a_token_the_stream_refuses_brings_back_the_form_with_the_reason(
    service: Service, dashboard: Dashboard
) -> None:
    async def refuse(route: Any) -> None:
        await route.fulfill(**problem(401, "unauthorized"))

    await dashboard.page.route("**/v1/stream?*", refuse)
    await dashboard.open(service.base_url, None)
    await dashboard.page.goto(f"{service.base_url}/#token={service.token()}")
    await expect(dashboard.page.locator("#token-error")).to_contain_text("refused the token")
    await expect(dashboard.page.get_by_label("Access token (JWT)")).to_be_visible()
    dashboard.assert_no_console_errors(network_ok=True)


async def test_after_a_server_restart_the_page_recovers_and_shows_what_it_missed(
    servers: list[Server], tmp_path: Path, database_url: str, dashboard: Dashboard
) -> None:
    """The page's server is killed; workers go on writing through another process on the same
    database; the server comes back on its port and the page catches up by itself."""
    secret = "browser-restart-secret-0123456789abcdef"
    port = free_port()
    watched, other = await asyncio.gather(
        start_server(servers, tmp_path, database_url, secret, port=port),
        start_server(servers, tmp_path, database_url, secret),
    )
    headers = other.auth()

    async def write(path: str, body: dict[str, Any]) -> None:
        response = await other.client.post(path, json=body, headers=headers)
        assert response.status_code == 201, response.text

    await write("/v1/tasks", {"id": "survivor", "kind": "k", "title": "Survives restarts"})
    await write("/v1/tasks/survivor/events", {"type": "progress", "data": {"percent": 20}})
    await dashboard.open(watched.base_url, watched.token())
    await dashboard.wait_percent("survivor", 20)

    assert watched.process is not None
    watched.process.send_signal(signal.SIGKILL)
    await watched.process.wait()
    connection = dashboard.page.locator("#connection")
    await expect(connection).not_to_have_attribute("data-state", "live")

    await write("/v1/tasks/survivor/events", {"type": "progress", "data": {"percent": 55}})
    await write("/v1/tasks", {"id": "newcomer", "kind": "k", "title": "Born while away"})
    await write("/v1/tasks/survivor/events", {"type": "progress", "data": {"percent": 90}})
    await asyncio.sleep(1)  # the page keeps trying meanwhile
    await expect(connection).not_to_have_attribute("data-state", "live")

    restarted = await start_server(servers, tmp_path, database_url, secret, port=port)
    await dashboard.wait_state("live")
    await dashboard.wait_percent("survivor", 90)
    await expect(dashboard.row("newcomer")).to_be_visible()

    response = await restarted.client.post(
        "/v1/tasks/survivor/events", json={"type": "succeeded", "data": {}}, headers=headers
    )
    assert response.status_code == 201
    await dashboard.wait_status("survivor", "succeeded")
    # Chromium logs the refused connections itself; the page's own code logged nothing.
    dashboard.assert_no_console_errors(network_ok=True)


# ------------------------------------------------------------------------------ pruned history


async def prune_everything(service: Service, tmp_path: Path) -> int:
    """Age every event by 40 days and run ``taskstream prune --older-than 30d``, as an operator
    would; returns the watermark (the newest seq, now pruned)."""
    connection = await asyncpg.connect(service.database_url)
    try:
        await connection.execute("UPDATE events SET time = time - interval '40 days'")
        newest = int(await connection.fetchval("SELECT max(seq) FROM events"))
    finally:
        await connection.close()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TASKSTREAM")}
    env.update(TASKSTREAM_DATABASE_URL=service.database_url, TASKSTREAM_JWT_SECRET=service.secret)
    process = await asyncio.create_subprocess_exec(
        str(TASKSTREAM),
        "prune",
        "--older-than",
        "30d",
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()
    await wait_ready(service.client)
    return newest


async def test_the_page_reloads_when_what_it_missed_was_pruned(
    service: Service, browser: Browser, tmp_path: Path
) -> None:
    """Offline while events come and are pruned away: back online, the stream says ``reset``
    and the page lists the tasks again instead of showing a state that misses them."""
    api = service.api
    await api.create_task(id="kept", title="Kept")
    await progress(api, "kept", 10)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        dashboard = Dashboard(await context.new_page())
        await dashboard.open(service.base_url, service.token())
        await dashboard.wait_percent("kept", 10)
        await context.set_offline(True)
        await dashboard.wait_state("offline")

        await progress(api, "kept", 70)
        await api.create_task(id="unseen", title="Created and pruned while offline")
        await prune_everything(service, tmp_path)
        await context.set_offline(False)

        await dashboard.wait_state("live")
        await dashboard.wait_percent("kept", 70)
        await expect(dashboard.row("unseen")).to_be_visible()
        await progress(api, "unseen", 5)  # and it goes on from there, live
        await dashboard.wait_percent("unseen", 5)
        dashboard.assert_no_console_errors(network_ok=True)
    finally:
        await context.close()


FOLLOW_PRUNED = """
async ([taskId, options]) => {
  const { watchTask } = await import("/static/taskstream.js");
  return new Promise((resolve) => {
    const seen = [];
    const watch = watchTask(taskId, {
      ...options,
      onReset: (reset) => seen.push(["reset", reset.pruned_through_seq]),
      onSnapshot: (task) => seen.push(["snapshot", task.percent]),
      onEvent: (event) => {
        seen.push([event.type, event.data.percent]);
        watch.close();
        resolve(seen);
      },
    });
  });
}
"""


async def test_the_module_starts_a_task_over_when_its_history_was_pruned(
    service: Service, dashboard: Dashboard, tmp_path: Path
) -> None:
    api = service.api
    await api.create_task(id="long")
    first = await api.event("long", "progress", {"percent": 20})
    await progress(api, "long", 40)
    watermark = await prune_everything(service, tmp_path)
    await dashboard.open(service.base_url, None)
    options = {"token": service.token(scopes="tasks:read"), "lastEventId": first["seq"]}
    following = asyncio.ensure_future(dashboard.page.evaluate(FOLLOW_PRUNED, ["long", options]))
    await asyncio.sleep(1)  # reset, then a fresh snapshot; then one more event ends it
    await progress(api, "long", 60)
    seen = await asyncio.wait_for(following, WAIT_MS / 1000)
    assert seen == [["reset", watermark], ["snapshot", 40], ["progress", 60]]
    dashboard.assert_no_console_errors()
