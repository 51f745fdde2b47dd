"""The dashboard's files as served: open, complete, self-contained and under the page policy.

What the page does in a browser is tests/test_browser.py; that the module's types say what the
API sends is tests/test_dashboard_types.py.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from service import bootstrap
from service.api.dashboard import STATIC
from tests.helpers import Service

FILES = {
    "dashboard.js": "text/javascript",
    "taskstream.js": "text/javascript",
    "taskstream.d.ts": "text/plain",
    "dashboard.css": "text/css",
    "icon.svg": "image/svg+xml",
}


class References(HTMLParser):
    """The URLs a page loads, and what under the policy would not run."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href"):
            value = found.get(name)
            if value and not value.startswith("#") and tag != "a":
                self.urls.append(value)
        if tag == "script" and "src" not in found:
            self.inline.append("an inline <script>")
        if tag == "style":
            self.inline.append("a <style> element")
        if "style" in found:
            self.inline.append(f"a style attribute on <{tag}>")
        self.inline += [f"an {name} handler on <{tag}>" for name in found if name.startswith("on")]


async def test_the_page_and_each_file_it_loads_are_served_without_a_token(
    service: Service,
) -> None:
    page = await service.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    references = References()
    references.feed(page.text)
    assert references.inline == [], "the page policy (script-src/style-src 'self') forbids them"
    assert set(references.urls) >= {"/static/dashboard.js", "/static/dashboard.css"}
    for url in references.urls:
        assert url.startswith("/static/"), f"{url}: everything comes from the service itself"
        response = await service.client.get(url)
        assert response.status_code == 200, url
    for name, media_type in FILES.items():
        response = await service.client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].partition(";")[0] == media_type, name
        assert response.content == (STATIC / name).read_bytes(), name
        assert "content-security-policy" in response.headers, name


def test_nothing_is_fetched_from_outside_nor_built() -> None:
    """No CDN, no absolute URL, no import of a package: the files run as they are."""
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I) or (
            path.suffix == ".svg" and "http://www.w3.org/2000/svg" in text
        ), f"{path.name} names an outside URL"
        if path.suffix == ".js":
            imports = re.findall(r"^\s*(?:import|export)\b[^;]*?from\s+\"([^\"]+)\"", text, re.M)
            assert all(name.startswith("./") for name in imports), (path.name, imports)


async def test_files_are_revalidated_with_an_etag(service: Service) -> None:
    first = await service.client.get("/static/taskstream.js")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    again = await service.client.get("/static/taskstream.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    page = await service.client.get("/", headers={"If-None-Match": etag})
    assert page.status_code == 200, "another file's ETag does not match the page"


@pytest.mark.parametrize(
    "path",
    [
        "/static/missing.js",
        "/static/..%2Fapi%2Fdashboard.py",
        "/static/%2E%2E/app.py",
        "/static/../app.py",
        "/static/",
        "/static/index.html/x",
    ],
)
async def test_only_the_files_of_the_directory_are_served(service: Service, path: str) -> None:
    response = await service.client.get(path)
    assert response.status_code == 404, (path, response.status_code)
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_the_banner_links_the_dashboard_signed_in_as_admin(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make run`` prints a dashboard link whose token reads, writes and cancels."""
    bootstrap.banner(service.settings, host="127.0.0.1", port=8000, show_tokens=True)
    out = capsys.readouterr().out
    [link] = [line.strip() for line in out.splitlines() if "/#token=" in line]
    assert link.startswith("http://127.0.0.1:8000/#token=")
    token = link.partition("#token=")[2]
    headers = {"Authorization": f"Bearer {token}"}
    created = await service.client.post("/v1/tasks", json={"kind": "k"}, headers=headers)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    assert (await service.client.get(f"/v1/tasks/{task_id}", headers=headers)).status_code == 200
    cancel = await service.client.post(f"/v1/tasks/{task_id}/cancel", headers=headers)
    assert cancel.status_code == 201
