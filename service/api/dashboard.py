"""The dashboard: the page at ``/`` and its files under ``/static/``, open without a token.

The files are those of ``service/static/``, served as they are (no build step). They are read
once, at the first request for any of them, and answered with an ETag and
``Cache-Control: no-cache``, so a browser revalidates (a 304 costs no body) and never runs a
stale script after an upgrade. A request names a file of that directory, never a path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from litestar import Request, Router, get
from litestar.response.base import ASGIResponse

from service.api.auth import PUBLIC, raw_header
from service.domain.problems import NotFound

STATIC = Path(__file__).resolve().parent.parent / "static"
PAGE = "index.html"

# Litestar adds "; charset=utf-8" to text types.
MEDIA_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    # Declarations are for reading and downloading; no browser should run them.
    ".ts": "text/plain",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


@dataclass(frozen=True, slots=True)
class File:
    body: bytes
    media_type: str
    etag: str


@cache
def files() -> dict[str, File]:
    """Every servable file of the static directory by name, read on first use."""
    found: dict[str, File] = {}
    for path in STATIC.iterdir():
        media_type = MEDIA_TYPES.get(path.suffix)
        if media_type is not None and path.is_file():
            body = path.read_bytes()
            etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
            found[path.name] = File(body, media_type, etag)
    return found


def answer(request: Request[Any, Any, Any], file: File) -> ASGIResponse:
    headers = {"ETag": file.etag, "Cache-Control": "no-cache"}
    if raw_header(request.scope, b"if-none-match") == file.etag:
        return ASGIResponse(status_code=304, headers=headers)
    return ASGIResponse(body=file.body, media_type=file.media_type, headers=headers)


@get("/", opt={PUBLIC: True}, include_in_schema=False)
async def index(request: Request[Any, Any, Any]) -> ASGIResponse:
    return answer(request, files()[PAGE])


@get("/static/{name:str}", opt={PUBLIC: True}, include_in_schema=False)
async def static(request: Request[Any, Any, Any], name: str) -> ASGIResponse:
    file = files().get(name)
    if file is None:
        raise NotFound(f"/static/{name} does not exist")
    return answer(request, file)


dashboard = Router(path="/", route_handlers=[index, static])
