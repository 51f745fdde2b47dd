"""Reading requests: JSON bodies under the size limit, idempotency keys, media negotiation."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request

from service.api.responses import JSON
from service.domain.models import IDEMPOTENCY_KEY_PATTERN
from service.domain.payload import decode_json
from service.domain.problems import (
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)

_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


async def json_body(
    request: Request[Any, Any, Any],
    max_bytes: int,
    *,
    checked: bool = True,
    optional: bool = False,
) -> Any:
    """The decoded body, checked in the contract's order: 413, then 415, then 400/422.

    ``optional``: no body at all (and no Content-Type) reads as ``{}``."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLarge(f"the body is over the {max_bytes}-byte limit")
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if optional and not media_type and not await request.body():
        return {}
    if media_type != JSON and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise UnsupportedMediaType(f"expected {JSON}, got {media_type or 'no Content-Type'}")
    body = await request.body()
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"the body is over the {max_bytes}-byte limit")
    return decode_json(body, checked=checked)


def idempotency_key(request: Request[Any, Any, Any]) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not _KEY.match(key):
        raise ValidationFailed(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
            errors=[{"field": "Idempotency-Key", "message": "1 to 255 visible ASCII characters"}],
        )
    return key


def negotiate(request: Request[Any, Any, Any], offered: list[str]) -> str:
    chosen = request.accept.best_match(offered)
    if chosen is None:
        raise NotAcceptable(f"this endpoint serves {', '.join(offered)}")
    return chosen
