"""Appends per subject: a token bucket per token ``sub``, counting events, per process.

Litestar's rate limiting keys by client address and has no burst; workers are backends that
share addresses and append in bursts, so this keys by the authenticated subject instead. A
request is admitted while its subject's bucket holds at least one event and is then charged
every event it carries, which may take the bucket below zero: a batch larger than the burst is
not refused forever, and the subject waits until the rate has paid for it.
"""

from __future__ import annotations

import math
import time

from service.domain.problems import RateLimited

MAX_SUBJECTS = 100_000
"""Buckets kept at most; a full bucket carries no information and is the first to go."""


class AppendLimiter:
    def __init__(self, rate_per_second: float, burst: float) -> None:
        self.rate = rate_per_second
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # sub -> (events left, when)

    def _level(self, subject: str, now: float) -> float:
        left, then = self._buckets.get(subject, (self.burst, now))
        return min(self.burst, left + (now - then) * self.rate)

    def admit(self, subject: str) -> None:
        """429 ``rate_limited`` with ``Retry-After`` while the subject's bucket is empty."""
        level = self._level(subject, time.monotonic())
        if level < 1:
            wait = math.ceil((1 - level) / self.rate)
            raise RateLimited(
                f"over {self.rate:g} events/s for this subject; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )

    def take(self, subject: str, events: int = 1) -> None:
        self.admit(subject)
        self.charge(subject, events)

    def charge(self, subject: str, events: int) -> None:
        now = time.monotonic()
        level = self._level(subject, now) - events
        if subject not in self._buckets and len(self._buckets) >= MAX_SUBJECTS:
            self._forget_full(now)
        self._buckets[subject] = (level, now)

    def _forget_full(self, now: float) -> None:
        full = [s for s in self._buckets if self._level(s, now) >= self.burst]
        for subject in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[subject]


def limiter(rate_per_second: float | None, burst: float | None) -> AppendLimiter | None:
    """None (no limit, the default: workers are trusted backends) when no rate is set."""
    if rate_per_second is None:
        return None
    return AppendLimiter(rate_per_second, burst if burst is not None else max(1.0, rate_per_second))
