"""One log line per request, and per stream when it ends, with its request id.

The line says who asked (the token's subject and tenant, never the token), what (method, path;
an ``access_token`` in the query is redacted), the answer's status and how long it took; for a
stream, also how many frames it was sent live and from the table, and why it ended. The
request id comes from a valid ``X-Request-ID`` header, or is made here, and is sent back in the
answer's ``X-Request-ID``.

Two pieces, because answers are built at different depths: :class:`RequestLog`, the outermost
middleware, notes the start; :func:`on_send`, a ``before_send`` hook (the outermost wrapper of
``send``), sees every answer however it was built, including the refusals of the
authentication and the router's 404s, and logs when the answer's last byte is sent. A stream
whose client vanished never sends a last byte: the middleware logs it when it returns.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any, cast

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.stream.streams import SUMMARY

log = logging.getLogger("taskstream.request")

_KEY = "taskstream.request"
"""Scope key of the request's log state: [request id, start, status, logged]."""
_VALID_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_TOKEN = re.compile(r"(?<=[?&]access_token=)[^&]*")


class RequestLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fields = cast(dict[str, Any], scope)  # Litestar's TypedDicts know no extra keys
        if fields["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = _state(fields)
        try:
            await self.app(scope, receive, send)
        finally:
            if state[2] and not state[3]:  # started, never finished: the client went away
                _log(fields, state)


async def on_send(message: Message, scope: Scope) -> None:
    """``before_send`` hook: the request id on every answer, the log line at its end."""
    fields = cast(dict[str, Any], scope)
    if fields["type"] != "http":
        return
    state = fields.get(_KEY) or _state(fields)  # no middleware ran: an unknown route
    if message["type"] == "http.response.start":
        state[2] = message["status"]
        message["headers"] = [*message.get("headers", ()), (b"x-request-id", state[0].encode())]
    elif message["type"] == "http.response.body" and not message.get("more_body", False):
        _log(fields, state)


def _state(scope: dict[str, Any]) -> list[Any]:
    request_id = None
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _VALID_ID.match(value):
            request_id = value.decode()
    state = [request_id or secrets.token_hex(8), time.perf_counter(), 0, False]
    scope[_KEY] = state
    return state


def _target(scope: dict[str, Any]) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    if not query:
        return str(scope["path"])
    return f"{scope['path']}?{_TOKEN.sub('[redacted]', '&' + query)[1:]}"


def _log(scope: dict[str, Any], state: list[Any]) -> None:
    state[3] = True
    fields: dict[str, Any] = {
        "request_id": state[0],
        "method": scope["method"],
        "path": _target(scope),
        "status": state[2],
        "duration_ms": round((time.perf_counter() - state[1]) * 1000, 3),
    }
    user = scope.get("user")
    if user is not None:
        fields["sub"], fields["tenant"] = user.sub, user.tenant
    stream = scope.get(SUMMARY)  # set by a stream when it ends
    if stream is not None:
        fields.update(stream)
    log.info("%s %s %d", fields["method"], fields["path"], state[2], extra=fields)
