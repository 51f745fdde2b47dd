"""Answers built straight from encoded bytes.

Handlers return Litestar's ``ASGIResponse``: the body is already JSON, so the conversion a
``Response`` goes through (header resolution, serialisation) would be work for nothing on the
append path.
"""

from __future__ import annotations

from litestar.response.base import ASGIResponse

JSON = "application/json"


def json_response(
    body: bytes, *, status: int = 200, headers: dict[str, str] | None = None
) -> ASGIResponse:
    return ASGIResponse(body=body, status_code=status, media_type=JSON, headers=headers)
