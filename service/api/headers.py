"""What browsers are told: security headers on every answer, and CORS for other origins.

Both are applied once for the whole application (app.py): the headers by a ``before_send``
hook, the outermost wrapper of ``send``, so that they reach every answer whoever builds it:
handlers, the raw ASGI stream answers, problem responses of the authentication middleware,
404s of the router and CORS preflights.
"""

from __future__ import annotations

from collections.abc import Sequence

from litestar.config.cors import CORSConfig
from litestar.types import Message, Scope

API_PREFIX = "/v1/"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        # The dashboard's scripts and styles come from its own files; an inline script would
        # need its sha256 hash listed here.
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

NOSNIFF = (b"x-content-type-options", b"nosniff")
API_HEADERS = [NOSNIFF]
"""An answer of the API: its body is JSON, CSV, NDJSON or an event stream, never a page."""
NO_STORE = (b"cache-control", b"no-store")
"""Tenant data is not for shared caches or a browser's disk; streams keep their no-cache."""
PAGE_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    NOSNIFF,
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
"""The page at ``/``, its static files and the open operational endpoints."""

CORS_REQUEST_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"]
CORS_EXPOSED_HEADERS = ["Retry-After", "Location", "Cancel-Requested"]
CORS_MAX_AGE_SECONDS = 600


async def add_security_headers(message: Message, scope: Scope) -> None:
    """A ``before_send`` hook: extends the headers of every response start.

    The header list is replaced, never appended to: an answer may send a list it shares with
    every other answer of its kind (a module constant).
    """
    if message["type"] != "http.response.start":
        return
    headers = list(message.get("headers") or ())
    if scope.get("path", "").startswith(API_PREFIX):
        headers += API_HEADERS
        if not any(name.lower() == b"cache-control" for name, _ in headers):
            headers.append(NO_STORE)
    else:
        headers += PAGE_HEADERS
    message["headers"] = headers


def cors_config(origins: Sequence[str]) -> CORSConfig | None:
    """Litestar's CORS for the allowed origins; None (no CORS headers at all) when empty.

    No credentials: the API authenticates with bearer tokens, never cookies.
    """
    if not origins:
        return None
    return CORSConfig(
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=list(CORS_REQUEST_HEADERS),
        expose_headers=list(CORS_EXPOSED_HEADERS),
        allow_credentials=False,
        max_age=CORS_MAX_AGE_SECONDS,
    )
