"""What a second worker buys: the append and fan-out benchmarks at ``--workers`` 1 and N.

Measures nothing itself. It reads the ``--json`` files of ``bench/append.py`` and
``bench/fanout.py`` runs that differ only in ``--workers``, puts their medians side by side with
the scaling factor (workers N / workers 1) and writes the table into ``docs/performance.md``:

    uv run python bench/append.py --workers 1 --json w1-append.json --no-docs
    uv run python bench/append.py --workers 2 --json w2-append.json
    uv run python bench/fanout.py --workers 1 --json w1-fanout.json
    uv run python bench/fanout.py --workers 2 --servers taskstream --json w2-fanout.json --no-docs
    uv run python bench/scaling.py --append w1-append.json w2-append.json \\
        --fanout w1-fanout.json w2-fanout.json

Either pair may be left out. The runs of a pair should come from the same machine and code,
one after the other; the report names each run's command, date and commit.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import append
import fanout

BEGIN_MARK = "<!-- BEGIN bench/scaling.py results (generated; edit the text around it) -->"
END_MARK = "<!-- END bench/scaling.py results -->"
SECTION = "## Scaling with --workers\n"


@dataclass
class Run:
    """One saved benchmark run: its description, its options and its measurements."""

    path: Path
    info: dict[str, str]
    args: dict[str, object]
    rows: list[dict[str, object]]

    @classmethod
    def load(cls, path: Path, rows: str) -> Run:
        saved = json.loads(path.read_text())
        return cls(path, saved["info"], saved.get("args", {}), saved[rows])

    @property
    def workers(self) -> int:
        return int(str(self.args.get("workers", 1)))


def ordered(runs: Sequence[Run]) -> tuple[Run, Run]:
    """(fewer workers, more workers); the pair must differ in ``--workers``."""
    low, high = sorted(runs, key=lambda r: r.workers)
    if low.workers == high.workers:
        raise SystemExit(f"{low.path} and {high.path} both ran with --workers {low.workers}")
    return low, high


def factor(low: float, high: float) -> str:
    return f"{high / low:.2f}x" if low else "—"


def describe(runs: Sequence[Run]) -> list[str]:
    lines = []
    for run in runs:
        info = run.info
        code = f"; code: commit {info['code']}" if info.get("code") else ""
        quiet = (
            f"; the machine was {info['idle_busy']} busy before it" if "idle_busy" in info else ""
        )
        lines.append(
            f"- `--workers {run.workers}`: `{info['command']}` — {info['date']}{code}{quiet}"
        )
    return lines


# --------------------------------------------------------------------------------------------
# Appends
# --------------------------------------------------------------------------------------------


def append_summaries(run: Run) -> dict[str, append.Summary]:
    measurements = [append.Measurement(**m) for m in run.rows]
    return {s.key: s for s in append.summarise(measurements)}


def pair(low: append.Summary, high: append.Summary, attr: str, fmt: Callable[[float], str]) -> str:
    """Two table cells: the median of ``attr`` with fewer workers, then with more."""
    return f"{fmt(low.median(attr))} | {fmt(high.median(attr))}"


def append_table(low: Run, high: Run) -> list[str]:
    a, b = append_summaries(low), append_summaries(high)
    n, m = low.workers, high.workers
    lines = [
        f"| scenario | clients | events/s, {n} | events/s, {m} | factor | p99 ms, {n} "
        f"| p99 ms, {m} | factor | service + Postgres CPU µs/event, {n} | … {m} "
        f"| events/commit, {n} | … {m} | machine busy, {n} | … {m} |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for key, s in a.items():
        if key.startswith("pg") or key not in b:
            continue
        t = b[key]
        cpu_low = s.median("service_us_per_event") + s.median("postgres_us_per_event")
        cpu_high = t.median("service_us_per_event") + t.median("postgres_us_per_event")
        lines.append(
            f"| {s.label} | {s.clients} | {pair(s, t, 'events_per_s', append.fmt_int)} "
            f"| **{factor(s.median('events_per_s'), t.median('events_per_s'))}** "
            f"| {pair(s, t, 'p99_ms', append.fmt_ms)} "
            f"| {factor(s.median('p99_ms'), t.median('p99_ms'))} "
            f"| {cpu_low:,.0f} | {cpu_high:,.0f} "
            f"| {pair(s, t, 'events_per_commit', lambda x: f'{x:.1f}')} "
            f"| {pair(s, t, 'busy_pct', lambda x: f'{x:.0f} %')} |"
        )
    for key in ("pg1", "pg100", "pgshaped"):
        if key in a and key in b:
            s, t = a[key], b[key]
            lines.append(
                f"| (same runs, no service) {s.label} | {s.clients} "
                f"| {append.fmt_int(s.median('events_per_s'))} "
                f"| {append.fmt_int(t.median('events_per_s'))} "
                f"| {factor(s.median('events_per_s'), t.median('events_per_s'))} "
                f"| {append.fmt_ms(s.median('p99_ms'))} | {append.fmt_ms(t.median('p99_ms'))} "
                "| | | | | | | |"
            )
    return lines


# --------------------------------------------------------------------------------------------
# Fan-out
# --------------------------------------------------------------------------------------------


def fanout_table(low: Run, high: Run) -> list[str]:
    a = [fanout.LiveRun(**m) for m in low.rows]
    b = [fanout.LiveRun(**m) for m in high.rows]
    n, m = low.workers, high.workers
    med, ms = fanout.med, append.fmt_ms
    lines = [
        f"| connections | p50 ms, {n} | p50 ms, {m} | factor | p99 ms, {n} | p99 ms, {m} "
        f"| factor | server CPU, {n} | server CPU, {m} | factor | RSS per connection, {n} "
        f"| … {m} | delivered / expected, {m} | connections per worker, {m} |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for conns in sorted({r.conns for r in a} & {r.conns for r in b}):
        x, y = fanout.group(a, "taskstream", conns), fanout.group(b, "taskstream", conns)
        if not x or not y:
            continue
        spread = "; ".join(" / ".join(f"{k:,}" for k in fanout.worker_connections(r)) for r in y)
        lines.append(
            f"| {conns:,} | {ms(med(x, 'p50_ms'))} | {ms(med(y, 'p50_ms'))} "
            f"| {factor(med(x, 'p50_ms'), med(y, 'p50_ms'))} "
            f"| {ms(med(x, 'p99_ms'))} | {ms(med(y, 'p99_ms'))} "
            f"| **{factor(med(x, 'p99_ms'), med(y, 'p99_ms'))}** "
            f"| {med(x, 'server_cpu_pct'):.0f} % | {med(y, 'server_cpu_pct'):.0f} % "
            f"| **{factor(med(x, 'server_cpu_pct'), med(y, 'server_cpu_pct'))}** "
            f"| {med(x, 'rss_per_conn_kib'):.1f} KiB | {med(y, 'rss_per_conn_kib'):.1f} KiB "
            f"| {sum(r.delivered for r in y):,} / {sum(r.expected for r in y):,} "
            f"| {spread or '—'} |"
        )
    return lines


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def render(appends: Sequence[Run], fanouts: Sequence[Run]) -> str:
    runs = [*appends, *fanouts]
    info: Mapping[str, str] = runs[0].info
    lines = [
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, {info['os']}; "
        f"{info.get('pg_version', 'PostgreSQL ?')}; Python {info['python']}. Service, "
        "Postgres and the load clients share the cores. The factor is the median with more "
        "workers divided by the median with fewer: above 1 is better for events/s, worse for "
        "latency and CPU.",
    ]
    if appends:
        low, high = ordered(appends)
        server_args = str(low.args.get("server_args") or "")
        lines += [
            "",
            f"**Appends** (`bench/append.py`, `taskstream serve --workers {low.workers}` "
            f"against `--workers {high.workers}`{', ' + server_args if server_args else ''}; "
            f"{low.args.get('repeats')} x {low.args.get('duration')} s per scenario, medians):",
            "",
            *describe((low, high)),
            "",
            *append_table(low, high),
        ]
    if fanouts:
        low, high = ordered(fanouts)
        lines += [
            "",
            f"**Fan-out** (`bench/fanout.py`, `taskstream serve --workers {low.workers}` "
            f"against `--workers {high.workers}`, {low.args.get('rate')} events/s appended "
            f"through the API for {low.args.get('duration')} s, "
            f"{low.args.get('repeats')} repetition(s), medians; server CPU and RSS summed over "
            "the server's processes, per cent of one core):",
            "",
            *describe((low, high)),
            "",
            *fanout_table(low, high),
        ]
    return "\n".join(lines).rstrip() + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Put append and fan-out runs at two --workers values side by side.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--append", type=Path, nargs=2, metavar="JSON", help="bench/append.py --json")
    p.add_argument("--fanout", type=Path, nargs=2, metavar="JSON", help="bench/fanout.py --json")
    p.add_argument("--output", type=Path, default=append.DOCS, help="markdown file to update")
    p.add_argument("--no-docs", action="store_true", help="only print the report")
    args = p.parse_args(argv)
    if not args.append and not args.fanout:
        p.error("give --append, --fanout or both")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    appends = [Run.load(path, "measurements") for path in args.append or ()]
    fanouts = [Run.load(path, "live") for path in args.fanout or ()]
    report = render(appends, fanouts)
    print(report)
    if not args.no_docs:
        append.replace_block(args.output, report, begin=BEGIN_MARK, end=END_MARK, section=SECTION)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
