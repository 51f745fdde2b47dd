"""Turning request bytes into validated values, refusing hostile JSON before it reaches Postgres.

Postgres refuses NUL in text and jsonb and NaN in jsonb, asyncpg cannot bind integers beyond
64 bits, and deep nesting exhausts recursion: each is a 4xx here, never a 500 later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from pydantic import BaseModel, ValidationError

from service.domain.models import DATA_MODELS, EventData, EventType
from service.domain.problems import (
    FieldError,
    MalformedRequest,
    PayloadTooLarge,
    ValidationFailed,
    invalid,
)

MAX_DEPTH = 64

ModelT = TypeVar("ModelT", bound=BaseModel)


class _Refused(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        self.path: list[str] = []


def decode_json(body: bytes, *, checked: bool = True) -> Any:
    """Parse a JSON body; malformed is 400, parseable but unacceptable is 422.

    ``checked=False`` leaves the storability checks to the caller (a batch checks each item on
    its own, so one bad item fails alone).
    """
    try:
        value = msgspec.json.decode(body)
    except RecursionError:
        raise invalid("body", f"nesting deeper than {MAX_DEPTH} levels") from None
    except msgspec.ValidationError as error:
        raise invalid("body", str(error)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise MalformedRequest(f"malformed JSON: {error}") from None
    if checked:
        check(value)
    return value


def check(value: Any, *, depth: int = 0) -> None:
    """Refuse what Postgres cannot store: NUL, unpaired surrogates, non-finite numbers, depth."""
    try:
        _check(value, depth)
    except _Refused as refused:
        field = ".".join(reversed(refused.path)) or "body"
        raise invalid(field, refused.message) from None


def _check(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Refused(f"nesting deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            try:
                _check_text(key)
                _check(item, depth + 1)
            except _Refused as refused:
                refused.path.append(key.replace("\x00", "\\u0000"))
                raise
    elif isinstance(value, list):
        for index, item in enumerate(value):
            try:
                _check(item, depth + 1)
            except _Refused as refused:
                refused.path.append(str(index))
                raise
    elif isinstance(value, float) and not math.isfinite(value):
        raise _Refused("numbers must be finite")


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise _Refused("NUL characters are not allowed")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise _Refused("unpaired surrogate in string") from None


def field_errors(error: ValidationError, prefix: str = "") -> list[FieldError]:
    return [
        {
            "field": prefix + ".".join(str(part) for part in item["loc"]) or "body",
            "message": item["msg"],
        }
        for item in error.errors(include_url=False)
    ]


def validate(model: type[ModelT], value: Any, prefix: str = "") -> ModelT:
    """Validate a decoded value against a request model; failures name every offending field."""
    if not isinstance(value, dict):
        raise invalid(prefix.rstrip(".") or "body", "must be a JSON object")
    try:
        return model.model_validate(value)
    except ValidationError as error:
        errors = field_errors(error, prefix)
        raise ValidationFailed(
            "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors
        ) from None


@dataclass(frozen=True, slots=True)
class CheckedEvent:
    """An event that passed every check that does not need its task."""

    type: EventType
    data: EventData
    data_json: str


def _encoded_data(data: Any, max_bytes: int) -> bytes:
    """``data`` as compact JSON, the form its size limit counts; 413 when over it."""
    data_json = msgspec.json.encode(data)
    if len(data_json) > max_bytes:
        raise PayloadTooLarge(f"data is {len(data_json)} bytes encoded, the limit is {max_bytes}")
    return data_json


def refuse_oversized_data(body: Any, max_bytes: int) -> bytes | None:
    """413 before 422 (the contract's order): oversized ``data`` is the answer even when
    something else in the same body or item is invalid too. Returns the encoded data, for
    check_event, so that it is encoded once."""
    if isinstance(body, dict) and "data" in body:
        return _encoded_data(body["data"], max_bytes)
    return None


def check_event(
    type_name: str, data: dict[str, Any], max_bytes: int, data_json: bytes | None = None
) -> CheckedEvent:
    """Type known, data small enough (counted on its compact encoding) and valid for its type.

    ``data_json``: ``data`` already encoded and sized by refuse_oversized_data (strict
    validation changes no value, so it is the same JSON)."""
    if data_json is None:
        data_json = _encoded_data(data, max_bytes)
    try:
        event_type = EventType(type_name)
    except ValueError:
        raise invalid("type", f"unknown event type {type_name!r}") from None
    model = validate(DATA_MODELS[event_type], data, "data.")
    return CheckedEvent(event_type, model, data_json.decode())
