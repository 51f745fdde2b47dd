"""``taskstream demo``: simulated workers, so that a dashboard or ``tail`` has something to show.

Every job runs through the client's ``track()``, as a real worker would: created and started
on entry, stages and progress on the way, a few logs, a lease the tracker keeps alive, and
``succeeded`` at the end. Some jobs raise (``failed``, with the exception's type as the code);
for some others a separate operator asks for cancellation through the cancel endpoint, which
the worker learns from its own appends and honours by appending ``cancelled``.

The outcomes come from a shuffled deck, so that every few jobs include each of them however
short the run; durations shrink with ``--duration`` for the same reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from rich.console import Console
from rich.table import Table

from service.client import AsyncTaskstream, AsyncTracker, InvalidTransition, TaskstreamError
from service.console.connection import connection

FULL_SCALE_SECONDS = 60.0
"""A run at least this long gets jobs of the kinds' full durations; shorter ones, shorter jobs."""
SHORTEST_JOB_SECONDS = 0.8
STEP_SECONDS = (0.08, 0.3)
PROGRESS_INTERVAL = 0.25
"""The trackers' coalescing interval: lively bars, and cancel requests learnt quickly."""
WARNING_CHANCE = 0.03
"""Per step: how often a job logs one of its kind's warnings."""


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


DECK = (Outcome.SUCCEEDED,) * 5 + (Outcome.FAILED,) * 2 + (Outcome.CANCELLED,)
"""Planned outcomes, reshuffled each time the deck runs out."""


@dataclass(frozen=True)
class Kind:
    """A kind of job: how it looks and how it goes wrong."""

    name: str
    titles: tuple[str, ...]
    stages: tuple[str, ...]
    unit: str
    units: tuple[int, int]
    seconds: tuple[float, float]
    lease_seconds: int
    warnings: tuple[str, ...]
    failures: tuple[Callable[[int], Exception], ...]
    """Each makes the exception a failing job raises, given the unit it failed at."""


KINDS = (
    Kind(
        name="import",
        titles=("customers-2026-03.csv", "orders from Shopify", "inventory.xlsx", "leads.json"),
        stages=("download", "parse", "validate", "load"),
        unit="rows",
        units=(2_000, 60_000),
        seconds=(4, 20),
        lease_seconds=30,
        warnings=(
            "skipped 3 rows without an email address",
            "column 'zip' looks numeric; kept as text",
        ),
        failures=(
            lambda n: ValueError(f"row {n}: unparseable date '31/02/2026'"),
            lambda n: ConnectionResetError("the storage bucket closed the connection"),
        ),
    ),
    Kind(
        name="render",
        titles=("teaser-1080p.mp4", "product-tour-4k.mov", "thumbnail sprites", "intro.gif"),
        stages=("prepare", "frames", "encode", "upload"),
        unit="frames",
        units=(240, 2_400),
        seconds=(8, 40),
        lease_seconds=60,
        warnings=("a frame took three times the average", "falling back to software encoding"),
        failures=(
            lambda n: RuntimeError(f"GPU out of memory at frame {n}"),
            lambda n: OSError("No space left on device: /scratch/render"),
        ),
    ),
    Kind(
        name="ai",
        titles=(
            "summarise support tickets",
            "classify product reviews",
            "embed the knowledge base",
            "translate release notes",
        ),
        stages=("queue", "tokenize", "infer", "store"),
        unit="items",
        units=(200, 5_000),
        seconds=(5, 30),
        lease_seconds=45,
        warnings=(
            "rate limited by the model API; backing off 2 s",
            "an item exceeds the context window; truncated",
        ),
        failures=(
            lambda n: TimeoutError("the model endpoint did not answer within 30 s"),
            lambda n: RuntimeError(f"item {n}: the model returned invalid JSON"),
        ),
    ),
    Kind(
        name="report",
        titles=("monthly revenue, March", "weekly churn", "quarterly board pack", "SLA report"),
        stages=("query", "aggregate", "render-pdf", "send"),
        unit="queries",
        units=(3, 40),
        seconds=(3, 15),
        lease_seconds=30,
        warnings=("a query ran for 12 s; an index may help",),
        failures=(lambda n: PermissionError("role 'reporting' lacks SELECT on sales.orders"),),
    ),
    Kind(
        name="backup",
        titles=("nightly backup of db-1", "nightly backup of db-2", "weekly archive"),
        stages=("snapshot", "compress", "upload", "verify"),
        unit="MB",
        units=(500, 20_000),
        seconds=(6, 30),
        lease_seconds=60,
        warnings=("upload throttled to 50 MB/s",),
        failures=(lambda n: OSError("checksum mismatch in the uploaded archive"),),
    ),
)


@dataclass(frozen=True)
class Job:
    kind: Kind
    title: str
    outcome: Outcome
    seconds: float
    units: int
    fail_at: float
    """The fraction of the job at which a failing job raises."""
    cancel_after: float
    """Seconds after its start at which the operator asks to cancel a job to be cancelled."""
    seed: int


@dataclass
class Tally:
    """What happened, for the summary."""

    outcomes: Counter[tuple[str, Outcome]] = field(default_factory=Counter)
    progress: int = 0
    logs: int = 0


class Demo:
    def __init__(self, client: AsyncTaskstream, args: argparse.Namespace, seed: int) -> None:
        self.client = client
        self.workers = args.workers
        self.seed = seed
        self.random = random.Random(seed)
        self.started = time.monotonic()
        self.deadline = self.started + args.duration
        self.scale = min(1.0, args.duration / FULL_SCALE_SECONDS)
        self.stopping = asyncio.Event()
        self.console = Console(highlight=False, soft_wrap=True)
        self.tally = Tally()
        self._deck: list[Outcome] = []
        self._operator: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            await asyncio.gather(*(self._worker(number) for number in range(self.workers)))
        finally:
            for request in self._operator:
                request.cancel()

    def stop(self) -> None:
        """The first Ctrl-C: running jobs are cancelled at their next step and no new one
        starts; a second one interrupts at once (Python's default handling)."""
        asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
        self.console.print("stopping: cancelling the running jobs (Ctrl-C again to quit now)")
        self.stopping.set()

    # ------------------------------------------------------------------ planning

    def _plan(self) -> Job | None:
        """The next job, fitted into the time left; None when none fits any more."""
        left = self.deadline - time.monotonic()
        if self.stopping.is_set() or left < SHORTEST_JOB_SECONDS:
            return None
        if not self._deck:
            self._deck = list(DECK)
            self.random.shuffle(self._deck)
        outcome = self._deck.pop()
        kind = self.random.choice(KINDS)
        seconds = max(SHORTEST_JOB_SECONDS, self.random.uniform(*kind.seconds) * self.scale)
        cancel_after = self.random.uniform(0.3, 0.6) * seconds
        if outcome is Outcome.CANCELLED:
            # It would run on until the end of the demo, had nobody cancelled it.
            seconds = left
        return Job(
            kind=kind,
            title=self.random.choice(kind.titles),
            outcome=outcome,
            seconds=min(seconds, left),
            units=self.random.randint(*kind.units),
            fail_at=self.random.uniform(0.2, 0.9),
            cancel_after=cancel_after,
            seed=self.random.getrandbits(32),
        )

    # ------------------------------------------------------------------ working

    async def _worker(self, number: int) -> None:
        while (job := self._plan()) is not None:
            began = time.monotonic()
            outcome, note = await self._attempt(job, number)
            self.tally.outcomes[job.kind.name, outcome] += 1
            self._report(job, outcome, note, time.monotonic() - began)

    async def _attempt(self, job: Job, number: int) -> tuple[Outcome, str]:
        metadata = {"demo": True, "worker": f"demo-{number}", job.kind.unit: job.units}
        tracked = self.client.track(
            kind=job.kind.name,
            title=job.title,
            metadata=metadata,
            lease_seconds=job.kind.lease_seconds,
            progress_interval=PROGRESS_INTERVAL,
        )
        try:
            async with tracked as task:
                if job.outcome is Outcome.CANCELLED:
                    self._cancel_later(task.task.id, job.cancel_after)
                outcome = await self._work(job, task)
            return outcome
        except TaskstreamError:
            raise  # the service refused or is unreachable: that ends the demo
        except Exception as error:  # the job's own failure, which the tracker recorded
            return Outcome.FAILED, f"{type(error).__name__}: {error}"

    async def _work(self, job: Job, task: AsyncTracker) -> tuple[Outcome, str]:
        """The job's steps; the outcome, unless it raises (a planned failure)."""
        rng = random.Random(job.seed)
        stages = job.kind.stages
        failure = rng.choice(job.kind.failures)
        start = time.monotonic()
        stage = None
        while (fraction := (time.monotonic() - start) / job.seconds) < 1:
            if task.cancel_requested or self.stopping.is_set():
                reason = "cancel requested" if task.cancel_requested else "the demo was stopped"
                await task.cancel(reason)
                return Outcome.CANCELLED, reason
            done = int(fraction * job.units)
            if job.outcome is Outcome.FAILED and fraction >= job.fail_at:
                raise failure(done)
            current = stages[min(len(stages) - 1, int(fraction * len(stages)))]
            if current != stage:
                stage = current
                await task.log(f"{stage}: started")
                self.tally.logs += 1
            if rng.random() < WARNING_CHANCE:
                await task.log(rng.choice(job.kind.warnings), level="warning")
                self.tally.logs += 1
            task.progress(
                percent=round(fraction * 100, 1),
                done=done,
                total=job.units,
                stage=stage,
                message=f"{done:,} of {job.units:,} {job.kind.unit}",
            )
            self.tally.progress += 1
            await asyncio.sleep(rng.uniform(*STEP_SECONDS))
        task.progress(percent=100, done=job.units, total=job.units, message="done")
        task.result = {job.kind.unit: job.units}
        return Outcome.SUCCEEDED, ""

    def _cancel_later(self, task_id: str, seconds: float) -> None:
        """The operator: someone at a dashboard who decides the job is no longer needed."""

        async def request() -> None:
            await asyncio.sleep(seconds)
            with contextlib.suppress(InvalidTransition):  # it finished first
                await self.client.cancel(task_id, reason="no longer needed")

        operation = asyncio.create_task(request())
        self._operator.add(operation)
        operation.add_done_callback(self._operator.discard)

    # ------------------------------------------------------------------ output

    def _report(self, job: Job, outcome: Outcome, note: str, seconds: float) -> None:
        mark, style = {
            Outcome.SUCCEEDED: ("✓", "green"),
            Outcome.FAILED: ("✗", "red"),
            Outcome.CANCELLED: ("⊘", "yellow"),
        }[outcome]
        line = f"{mark} {job.kind.name:<7} {job.title:<28} {outcome:<9} {seconds:5.1f} s"
        self.console.print(f"{line}  {note}".rstrip(), style=style, markup=False)

    def summary(self) -> None:
        outcomes = self.tally.outcomes
        table = Table(title="taskstream demo", title_justify="left")
        table.add_column("kind")
        for outcome in Outcome:
            table.add_column(outcome.value, justify="right")
        for kind in KINDS:
            counts = [outcomes[kind.name, outcome] for outcome in Outcome]
            if any(counts):
                table.add_row(kind.name, *map(str, counts))
        total = [sum(n for (_, o), n in outcomes.items() if o is outcome) for outcome in Outcome]
        table.add_row("all", *map(str, total), style="bold")
        self.console.print(table)
        self.console.print(
            f"{sum(total)} tasks in {time.monotonic() - self.started:.1f} s with "
            f"{self.workers} workers (seed {self.seed}): {self.tally.progress} progress calls "
            f"(coalesced by the trackers), {self.tally.logs} logs",
            markup=False,
        )


def main(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(args))


async def _demo(args: argparse.Namespace) -> int:
    target = connection(args)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    async with target.async_client() as client:
        demo = Demo(client, args, seed)
        demo.console.print(
            f"taskstream demo: {args.workers} workers for {args.duration:g} s on {target.url}; "
            f"watch with `taskstream tail` or open {target.url}/",
            markup=False,
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, demo.stop)
        try:
            await demo.run()
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        demo.summary()
    return 0
