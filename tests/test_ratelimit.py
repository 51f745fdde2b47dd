"""Append rate limiting per token subject (TASKSTREAM_APPEND_RATE_PER_SECOND and a burst)."""

from __future__ import annotations

import pytest

from tests.helpers import Service, assert_problem

# A rate slow enough that the bucket does not refill noticeably during a test.
LIMITED = {"append_rate_per_second": 0.5, "append_burst": 4}


def _progress(percent: int) -> dict[str, object]:
    return {"type": "progress", "data": {"percent": percent}}


@pytest.mark.parametrize("service", [LIMITED], indirect=True)
async def test_appends_over_the_burst_are_429_with_retry_after_and_change_nothing(
    service: Service,
) -> None:
    api = service.api
    await api.create_task(id="t")  # the created event counts: 3 left
    for percent in (1, 2, 3):
        assert (await api.post("/v1/tasks/t/events", json=_progress(percent))).status_code == 201
    refused = await api.post("/v1/tasks/t/events", json=_progress(4))
    assert_problem(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 1
    assert_problem(await api.post("/v1/tasks", json={"kind": "k"}), 429, "rate_limited")
    assert (await api.task("t"))["version"] == 4


@pytest.mark.parametrize("service", [LIMITED], indirect=True)
async def test_the_limit_is_per_subject(service: Service) -> None:
    alice, bob = service.as_(sub="alice"), service.as_(sub="bob")
    await alice.create_task(id="t")
    for percent in (1, 2, 3):
        await alice.event("t", "progress", {"percent": percent})
    assert_problem(await alice.post("/v1/tasks/t/events", json=_progress(9)), 429)
    assert (await bob.post("/v1/tasks/t/events", json=_progress(9))).status_code == 201


@pytest.mark.parametrize("service", [LIMITED], indirect=True)
async def test_a_batch_counts_its_events_and_may_exceed_the_burst_once(service: Service) -> None:
    api = service.api
    await api.create_task(id="t")
    items = [{"task_id": "t", **_progress(p)} for p in range(1, 11)]
    results = (await api.batch(items)).json()["results"]
    assert [r["status"] for r in results] == [201] * 10  # admitted with 3 left: 10 charged
    # Now 7 events in debt: refused before the body is even read (429 comes before 413).
    over_size = "x" * (service.settings.max_body_bytes + 1)
    refused = await api.post_raw("/v1/events/batch", over_size)
    assert_problem(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 14  # (1 - -7) / 0.5 s


@pytest.mark.parametrize("service", [LIMITED], indirect=True)
async def test_reads_and_streams_are_not_limited(service: Service) -> None:
    api = service.api
    await api.create_task(id="t")
    for percent in (1, 2, 3):
        await api.event("t", "progress", {"percent": percent})
    for _ in range(10):
        assert (await api.get("/v1/tasks/t")).status_code == 200
    assert (await api.get("/v1/tasks/t/events")).status_code == 200


async def test_no_limit_by_default(service: Service) -> None:
    api = service.api
    await api.create_task(id="t")
    items = [{"task_id": "t", **_progress(p % 100)} for p in range(300)]
    results = (await api.batch(items)).json()["results"]
    assert {r["status"] for r in results} == {201}
    assert (await api.post("/v1/tasks/t/events", json=_progress(5))).status_code == 201
