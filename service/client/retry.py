"""When and how long to wait before trying a request again."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from service.client.errors import ConnectionFailed
from service.client.steps import Close, Op, Send, Sleep


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries`` more attempts after the first; exponential backoff with full jitter.

    A ``Retry-After`` is waited out as given, unless it is longer than ``max_retry_after``:
    then the refusal is raised at once rather than block the caller for that long.
    """

    retries: int = 3
    backoff: float = 0.25
    max_backoff: float = 10.0
    max_retry_after: float = 60.0

    def backoff_delay(self, failures: int) -> float:
        """Random in [0, backoff·2^(failures-1)], capped: concurrent clients spread out."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** max(0, failures - 1))
        return random.uniform(0, ceiling)

    def delay_after(self, response: httpx.Response, failures: int) -> float | None:
        """How long to wait before trying again after this answer; ``None``: do not."""
        if response.status_code != 429 and response.status_code < 500:
            return None
        if failures > self.retries:
            return None
        wait = retry_after(response)
        if wait is None:
            return self.backoff_delay(failures)
        return wait if wait <= self.max_retry_after else None


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); ``None`` when absent."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def exchange(
    request: httpx.Request, policy: RetryPolicy, *, stream: bool = False
) -> Op[httpx.Response]:
    """Send ``request`` until an answer not worth retrying, or the last retry's answer.

    Retrying a write is safe only because every write the client sends carries an
    idempotency key (or, like cancel, is idempotent by nature): the same ``request``
    object, key included, goes out each time.
    """
    failures = 0
    while True:
        try:
            response: httpx.Response = yield Send(request, stream)
        except httpx.TransportError as error:
            failures += 1
            if failures > policy.retries:
                raise ConnectionFailed(
                    f"{request.method} {request.url}: no answer after {failures} attempts"
                    f" ({type(error).__name__}: {error})"
                ) from error
            yield Sleep(policy.backoff_delay(failures))
            continue
        failures += 1
        delay = policy.delay_after(response, failures)
        if delay is None:
            return response
        if stream:
            yield Close(response)
        yield Sleep(delay)
