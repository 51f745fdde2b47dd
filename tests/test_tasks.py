"""Creating, reading and listing tasks."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import (
    TASK_ID_RE,
    Service,
    assert_created,
    assert_field_errors,
    assert_ok,
    assert_problem,
    assert_task,
    settled,
)

OPTIONAL_FIELDS = (
    "title",
    "percent",
    "done",
    "total",
    "message",
    "stage",
    "result",
    "error",
    "metadata",
    "started_at",
    "finished_at",
)


async def test_create_with_only_kind_generates_an_id_and_leaves_optional_fields_null(
    service: Service,
) -> None:
    response = await service.api.create_task_response(kind="build")
    task = assert_created(response)
    assert_task(task)
    assert TASK_ID_RE.match(task["id"])
    assert task["tenant"] == "t1"
    assert task["kind"] == "build"
    assert task["status"] == "pending"
    assert task["version"] == 1
    for name in OPTIONAL_FIELDS:
        assert task[name] is None, f"{name} should be null, got {task[name]!r}"
    assert task["created_at"] == task["updated_at"]


async def test_create_carries_location_of_the_task(service: Service) -> None:
    response = await service.api.create_task_response(id="loc-1")
    assert_created(response)
    location = response.headers["location"]
    assert location.endswith("/v1/tasks/loc-1")
    follow = await service.api.get(location.removeprefix(service.base_url))
    assert assert_ok(follow)["id"] == "loc-1"


async def test_create_echoes_id_title_and_metadata(service: Service) -> None:
    metadata = {"repo": "acme/app", "n": 3, "nested": {"list": [1, "two", None, True]}}
    task = await service.api.create_task(
        id="build-1", kind="ci", title="Build #1", metadata=metadata
    )
    assert task["id"] == "build-1"
    assert task["kind"] == "ci"
    assert task["title"] == "Build #1"
    assert task["metadata"] == metadata


async def test_get_returns_the_task_as_created(service: Service) -> None:
    created = await service.api.create_task(id="get-1", title="t", metadata={"a": 1})
    assert await service.api.task("get-1") == created


async def test_create_appends_a_created_event(service: Service) -> None:
    task = await service.api.create_task(id="ev-1", kind="ci", title="T", metadata={"x": 1})
    events = await service.api.history("ev-1")
    assert len(events) == 1
    event = events[0]
    assert event["type"] == "created"
    assert event["version"] == 1
    assert event["task_id"] == "ev-1"
    assert event["tenant"] == "t1"
    assert event["seq"] == task["last_seq"]
    assert event["data"] == {"kind": "ci", "title": "T", "metadata": {"x": 1}}


async def test_created_event_of_a_bare_task_has_null_title_and_metadata(service: Service) -> None:
    await service.api.create_task(id="bare", kind="k")
    (event,) = await service.api.history("bare")
    assert event["data"] == {"kind": "k", "title": None, "metadata": None}


async def test_create_with_a_taken_id_is_409_task_exists_and_changes_nothing(
    service: Service,
) -> None:
    original = await service.api.create_task(id="dup", kind="a", title="first")
    response = await service.api.create_task_response(id="dup", kind="b", title="second")
    assert_problem(response, 409, "task_exists")
    assert await service.api.task("dup") == original
    assert len(await service.api.history("dup")) == 1


@pytest.mark.parametrize(
    "task_id",
    ["a", "A" * 128, "a.b:c-d_e", "0", "9-x", "Z:..__--"],
)
async def test_valid_task_ids_are_accepted(service: Service, task_id: str) -> None:
    task = await service.api.create_task(id=task_id)
    assert task["id"] == task_id
    assert (await service.api.task(task_id))["id"] == task_id


async def test_invalid_task_ids_are_422_naming_the_id(service: Service) -> None:
    bad_ids = ["", "-a", ".a", "_a", ":a", "a" * 129, "a b", "a/b", "ä", "a\tb", "a#b", "a?b"]
    for task_id in bad_ids:
        response = await service.api.create_task_response(id=task_id)
        body = assert_problem(response, 422, "validation_error")
        assert_field_errors(body, "id")
    assert (await service.api.list_tasks())["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "kind"),
        ({"kind": 5}, "kind"),
        ({"kind": None}, "kind"),
        ({"kind": ["build"]}, "kind"),
        ({"kind": "k", "title": 5}, "title"),
        ({"kind": "k", "id": 5}, "id"),
        ({"kind": "k", "metadata": "text"}, "metadata"),
        ({"kind": "k", "metadata": [1, 2]}, "metadata"),
    ],
)
async def test_create_with_invalid_body_is_422_naming_the_field(
    service: Service, body: dict[str, object], field: str
) -> None:
    response = await service.api.post("/v1/tasks", json=body)
    problem = assert_problem(response, 422, "validation_error")
    assert_field_errors(problem, field)
    assert (await service.api.list_tasks())["items"] == []


async def test_get_unknown_task_is_404_task_not_found(service: Service) -> None:
    assert_problem(await service.api.get("/v1/tasks/nope"), 404, "task_not_found")


async def test_list_is_newest_first(service: Service) -> None:
    for index in range(5):
        await service.api.create_task(id=f"task-{index}")
    page = await service.api.list_tasks()
    assert [task["id"] for task in page["items"]] == [f"task-{i}" for i in reversed(range(5))]
    for task in page["items"]:
        assert_task(task)
    assert page["next_cursor"] is None
    assert isinstance(page["as_of_seq"], int)


async def test_list_orders_by_creation_newest_first_across_pages(service: Service) -> None:
    await asyncio.gather(*(service.api.create_task(id=f"c-{i:02d}") for i in range(20)))
    items = await service.api.all_tasks(limit=3)
    times = [task["created_at"] for task in items]
    assert times == sorted(times, reverse=True)
    assert sorted(task["id"] for task in items) == [f"c-{i:02d}" for i in range(20)]
    assert items == (await service.api.list_tasks(limit=20))["items"]


async def test_list_items_equal_get(service: Service) -> None:
    await service.api.create_task(id="same", title="x", metadata={"k": [1]})
    await service.api.event("same", "progress", {"percent": 5, "message": "m"})
    listed = (await service.api.list_tasks())["items"][0]
    assert settled(listed) == settled(await service.api.task("same"))


async def test_list_filters_by_status_and_kind(service: Service) -> None:
    await service.api.create_task(id="p-a", kind="alpha")
    await service.api.create_task(id="r-a", kind="alpha")
    await service.api.create_task(id="r-b", kind="beta")
    await service.api.create_task(id="s-b", kind="beta")
    await service.api.bring_to("r-a", "running")
    await service.api.bring_to("r-b", "running")
    await service.api.bring_to("s-b", "succeeded")

    def ids(page: dict[str, object]) -> set[str]:
        return {task["id"] for task in page["items"]}  # type: ignore[attr-defined,index]

    assert ids(await service.api.list_tasks(status="running")) == {"r-a", "r-b"}
    assert ids(await service.api.list_tasks(kind="alpha")) == {"p-a", "r-a"}
    assert ids(await service.api.list_tasks(kind="beta", status="running")) == {"r-b"}
    assert ids(await service.api.list_tasks(status="succeeded")) == {"s-b"}
    assert ids(await service.api.list_tasks(status="failed")) == set()
    assert ids(await service.api.list_tasks(kind="gamma")) == set()


async def test_list_pages_with_cursor_cover_everything_once(service: Service) -> None:
    for index in range(7):
        await service.api.create_task(id=f"pg-{index}")
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await service.api.list_tasks(limit=2, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= 2
        seen.extend(task["id"] for task in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert page["items"], "a non-null cursor after an empty page"
    assert cursor is None
    assert seen == [f"pg-{i}" for i in reversed(range(7))]


async def test_list_cursor_is_not_null_while_tasks_remain(service: Service) -> None:
    for index in range(3):
        await service.api.create_task(id=f"nc-{index}")
    page = await service.api.list_tasks(limit=2)
    assert page["next_cursor"] is not None
    rest = await service.api.list_tasks(limit=2, cursor=page["next_cursor"])
    assert [task["id"] for task in rest["items"]] == ["nc-0"]
    assert rest["next_cursor"] is None


async def test_list_cursor_keeps_its_filter_position_when_new_tasks_arrive(
    service: Service,
) -> None:
    for index in range(4):
        await service.api.create_task(id=f"old-{index}")
    first = await service.api.list_tasks(limit=2)
    await service.api.create_task(id="newer")
    rest = await service.api.all_tasks(limit=2, cursor=first["next_cursor"])
    assert [t["id"] for t in first["items"] + rest] == ["old-3", "old-2", "old-1", "old-0"]


async def test_list_default_limit_is_100(service: Service) -> None:
    semaphore = asyncio.Semaphore(10)

    async def create(index: int) -> None:
        async with semaphore:
            await service.api.create_task(id=f"many-{index:03d}")

    await asyncio.gather(*(create(i) for i in range(101)))
    page = await service.api.list_tasks()
    assert len(page["items"]) == 100
    assert page["next_cursor"] is not None
    assert len((await service.api.list_tasks(limit=1000))["items"]) == 101


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"status": "bogus"}, "status"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
async def test_list_rejects_bad_query_with_422(
    service: Service, params: dict[str, str], field: str
) -> None:
    await service.api.create_task()
    body = assert_problem(
        await service.api.get("/v1/tasks", params=params), 422, "validation_error"
    )
    assert_field_errors(body, field)


async def test_list_accepts_limit_1_and_1000(service: Service) -> None:
    await service.api.create_task(id="one")
    assert len((await service.api.list_tasks(limit=1))["items"]) == 1
    assert len((await service.api.list_tasks(limit=1000))["items"]) == 1


async def test_list_of_an_empty_tenant(service: Service) -> None:
    page = await service.api.list_tasks()
    assert page["items"] == []
    assert page["next_cursor"] is None
    assert isinstance(page["as_of_seq"], int)
