"""Schemathesis against the service's own ``/schema/openapi.json``: never a 5xx, and every
answer conforms to the document (status code documented, content type, headers, body schema).

Bounded: for every operation, ``MAX_EXAMPLES`` cases generated from the schema (positive data)
and ``MAX_EXAMPLES`` violating it (negative data), each sent to the running service with a
valid token carrying every scope, so generation reaches the handlers rather than stopping at 401.
A few tasks are seeded under ids the generator tends to produce, so reads and appends reach
their success paths too, not only 404.

The two Server-Sent Events endpoints are excluded: a stream stays open for as long as the
client listens, which a request/response fuzzer cannot judge; their refusals, resumption and
endings are covered by tests/test_streams.py and tests/test_stream_resume.py.

Why not ``schemathesis.pytest.from_fixture``: with pytest 9 its lazy loader fails before the
first case (``'Function' object has no attribute '_nodeid'``, schemathesis 4.32.5), and its
synchronous test body would block the event loop the service runs on. Its test builder (which
adds the examples and coverage phases) fails under Hypothesis 6.170 too (an assertion on the
``@given`` wrapper's settings), so only the fuzzing phase runs here. The cases are instead
generated per operation with ``operation.as_strategy`` under Hypothesis and sent with
``case.call_and_validate`` from a worker thread, while the service runs on the test's loop as in
every other test. Failures of all operations are collected and reported together, each with
the curl command that reproduces it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import ALL_SCOPES, Service

MAX_EXAMPLES = 25  # per operation and generation mode
SCOPES = f"{ALL_SCOPES} tasks:cancel"  # every scope the contract names, v1.1 included
SEEDED_TASKS = ["0", "A", "a", "00"]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


BOUNDED = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Report:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    unsatisfiable: list[str] = field(default_factory=list)


def fuzz(base_url: str, headers: dict[str, str]) -> Report:
    """Every operation but the streams, both generation modes; blocking (run in a thread)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json")
    report = Report()
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) >= 7, [operation.label for operation in operations]
    for operation in operations:
        if "streams" in (operation.tags or []):
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_operation(operation, mode, base_url, headers, report)
    return report


def fuzz_operation(
    operation: APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    base_url: str,
    headers: dict[str, str],
    report: Report,
) -> None:
    label = f"{operation.label} ({mode.value})"

    @BOUNDED
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case[Any]) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=10)
        report.requests[label] += 1
        report.statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        run()
    except Unsatisfiable:
        # Nothing in the request can break the schema (e.g. GET /healthz has no parameters).
        report.unsatisfiable.append(label)
    except (FailureGroup, AssertionError) as failure:  # Hypothesis re-raises the shrunk case
        report.failures.append(f"{label}:\n{failure}")


@pytest.mark.timeout(300)
async def test_api_conforms_to_its_schema(service: Service) -> None:
    api = service.as_(tenant="fuzz", scopes=SCOPES, sub="fuzzer")
    for task_id in SEEDED_TASKS:
        await api.create_task(id=task_id, kind="seed")
    await api.event("A", "progress", {"percent": 5})
    await api.event("a", "succeeded", {"result": [1]})

    headers: dict[str, Any] = {"Authorization": f"Bearer {api.token}"}
    started = time.monotonic()
    report = await asyncio.to_thread(fuzz, service.base_url, headers)
    elapsed = time.monotonic() - started

    print(
        f"\nschemathesis: {sum(report.requests.values())} requests in {elapsed:.1f} s;"
        f" statuses {dict(sorted(report.statuses.items()))}"
    )
    for label, count in sorted(report.requests.items()):
        print(f"  {label}: {count}")
    print(f"  no negative cases possible: {report.unsatisfiable}")
    assert not report.failures, "\n\n".join(report.failures)
    assert not any(status >= 500 for status in report.statuses), report.statuses
