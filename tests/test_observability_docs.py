"""The Grafana dashboard and the Prometheus alert rules under ``docs/`` against the real service.

Every ``taskstream_*`` name they use must be one a running service exports (counters read as
``_total``, histograms as ``_bucket``/``_sum``/``_count``), and counters only through a range
(``rate``, ``increase``). Every alert says how bad it is, what happened and where the runbook is.

There is no promtool here, so the PromQL check is deliberately shallow: closed quotes, balanced
brackets, label matchers of the form ``name op "value"``, durations in ranges, and every name
called like a function a PromQL function, aggregation or keyword. It catches typos and
mismatched brackets, not type errors (a range vector where an instant one is due); the last
test parses properly when the ``promql-parser`` package is installed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Service, scrape

DOCS = Path(__file__).resolve().parent.parent / "docs"
DASHBOARD = DOCS / "grafana" / "taskstream.json"
ALERTS = DOCS / "prometheus" / "alerts.yml"
OPERATIONS = DOCS / "operations.md"

SEVERITIES = {"critical", "warning", "info"}
CUMULATIVE = {"counter", "histogram"}  # only meaningful through a range: rate(), increase()

# The states an operator must act on (issue 7), each with the series its rule must read.
REQUIRED_ALERTS = {
    "TaskstreamScrapeDown": "up",
    "TaskstreamNotReady": "probe_success",
    "TaskstreamListenerDown": "taskstream_listener_connected",
    "TaskstreamListenerLagGrowing": "taskstream_listener_lag_events",
    "TaskstreamSlowSubscriberCutoffsSurging": "taskstream_slow_subscriber_disconnects_total",
    "TaskstreamAppendErrors": "taskstream_append_errors_total",
    "TaskstreamAppendLatencyHigh": "taskstream_append_seconds_bucket",
    "TaskstreamPoolSaturated": "taskstream_pool_connections",
}

# Labels Prometheus attaches to every scraped series; the service itself never exports them.
TARGET_LABELS = {"job", "instance"}

FUNCTIONS = {
    *("abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh"),
    *("avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh"),
    *("count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg"),
    *("delta", "deriv", "double_exponential_smoothing", "exp", "floor", "histogram_avg"),
    *("histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev"),
    *("histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase"),
    *("irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2"),
    *("mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi"),
    *("predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets"),
    *("round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc"),
    *("sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan"),
    *("tanh", "time", "timestamp", "vector", "year"),
}
AGGREGATIONS = {
    *("avg", "bottomk", "count", "count_values", "group", "limit_ratio", "limitk", "max"),
    *("min", "quantile", "stddev", "stdvar", "sum", "topk"),
}
# Words that may stand before a parenthesis without being called.
KEYWORDS = {
    *("by", "without", "on", "ignoring", "group_left", "group_right"),
    *("and", "or", "unless", "bool", "offset"),
}

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
RANGE = re.compile(r"\[([^\]]*)\]")
DURATION = r"(?:\d+(?:ms|s|m|h|d|w|y))+"
RANGE_BODY = re.compile(rf"^\s*{DURATION}\s*(?::\s*(?:{DURATION})?\s*)?$")
MATCHERS = re.compile(r"\{([^{}]*)\}")
MATCHER = re.compile(r'^\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:=~|!~|!=|=)\s*""\s*$')
SELECTOR = re.compile(r"\b(taskstream_[a-z0-9_]+)\s*(?:\{([^{}]*)\})?\s*(\[)?")
LABEL_MATCH = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


# --------------------------------------------------------------------------- the documents


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def as_promql(expression: str) -> str:
    """A Grafana query as plain PromQL: interval variables become a duration, the others (used
    only as label values here) a match-all regex."""
    expression = re.sub(r"\$__(?:rate_interval|interval|range)\b", "5m", expression)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expression)


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every dashboard query and every alert rule."""
    found = [
        (f"panel {panel['title']!r}", as_promql(target["expr"]))
        for panel in panels(dashboard())
        for target in panel.get("targets", [])
    ]
    found += [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    return found


def variable_queries() -> list[tuple[str, str]]:
    """Grafana's ``label_values(...)`` queries: not PromQL, but they name metrics too."""
    return [
        (f"variable {variable['name']}", variable["definition"])
        for variable in dashboard()["templating"]["list"]
        if variable["type"] == "query"
    ]


def promql_problems(expression: str) -> list[str]:
    problems = []
    bare = STRING.sub('""', expression)
    if any(quote in bare.replace('""', "") for quote in "\"'`"):
        problems.append("an unclosed quote")
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for character in bare:
        if character in "([{":
            stack.append(character)
        elif character in pairs and (not stack or stack.pop() != pairs[character]):
            problems.append(f"an unmatched {character!r}")
    if stack:
        problems.append(f"unclosed {''.join(stack)!r}")
    for name in CALL.findall(bare):
        if name not in FUNCTIONS | AGGREGATIONS | KEYWORDS:
            problems.append(f"unknown function {name!r}")
    for body in RANGE.findall(bare):
        if not RANGE_BODY.match(body):
            problems.append(f"not a duration: [{body}]")
    for body in MATCHERS.findall(bare):
        for matcher in filter(str.strip, body.split(",")):
            if not MATCHER.match(matcher):
                problems.append(f"not a label matcher: {matcher.strip()!r}")
    return problems


# --------------------------------------------------------------------------- static checks


def test_the_promql_check_catches_what_it_claims_to() -> None:
    assert promql_problems('sum by (job) (rate(x_total{job=~"a|b"}[5m])) > 0') == []
    assert promql_problems("rate(x_total[5m]") == ["unclosed '('"]
    assert promql_problems("sum(rate(x_total[5m])))") == ["an unmatched ')'"]
    assert promql_problems("ratez(x_total[5m])") == ["unknown function 'ratez'"]
    assert promql_problems("rate(x_total[5 minutes])") == ["not a duration: [5 minutes]"]
    assert "an unclosed quote" in promql_problems('x{state="idle}')
    assert promql_problems("x{state=idle}") == ["not a label matcher: 'state=idle'"]


def test_every_expression_is_well_formed() -> None:
    found = expressions()
    assert len(found) > 20, found
    for where, expression in found:
        assert "$" not in expression, f"{where}: a variable left in {expression!r}"
        problems = promql_problems(expression)
        assert not problems, f"{where}: {problems} in {expression!r}"


def test_the_dashboard_is_importable_with_a_prometheus_input() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    assert board["uid"] and board["title"] and board["id"] is None
    (source,) = board["__inputs"]
    assert source["name"] == "DS_PROMETHEUS" and source["pluginId"] == "prometheus", source
    datasource = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for variable in board["templating"]["list"]:
        assert variable["datasource"] == datasource, variable["name"]
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    rows = [panel for panel in panels(board) if panel["type"] == "row"]
    assert len(rows) >= 4, "rows by subsystem"
    for panel in panels(board):
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24 and place["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == datasource, panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']}: no unit"
        assert panel.get("description"), f"{panel['title']}: no description"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == datasource and target["expr"], panel["title"]


def test_every_alert_says_how_bad_what_and_where_to_look() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    headings = {
        re.sub(r"[^a-z0-9-]", "", line.lstrip("#").strip().lower().replace(" ", "-"))
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"Taskstream[A-Z][A-Za-z]+", name), name
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
        assert re.fullmatch(DURATION, rule.get("for", "0s")), name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert isinstance(annotations.get(key), str) and annotations[key].strip(), (name, key)
        page, _, anchor = annotations["runbook"].partition("#")
        assert page == "docs/operations.md" and anchor in headings, (name, annotations["runbook"])
    for name, series in REQUIRED_ALERTS.items():
        assert name in names, f"missing alert {name}"
        (rule,) = [rule for rule in rules if rule["alert"] == name]
        assert re.search(rf"\b{series}\b", rule["expr"]), (name, series)
    (listener_down,) = [rule for rule in rules if rule["alert"] == "TaskstreamListenerDown"]
    assert re.search(r"taskstream_listener_connected\)?\s*==\s*0", listener_down["expr"])
    assert listener_down["for"] == "1m"


# --------------------------------------------------------------------------- against /metrics


def series_of(family: Any) -> dict[str, str]:
    """The series names a family's samples carry, each with its type."""
    if family.type == "counter":
        return {f"{family.name}_total": family.type}
    if family.type == "histogram":
        return {f"{family.name}_{part}": family.type for part in ("bucket", "sum", "count")}
    return {family.name: family.type}


async def test_every_metric_the_documents_use_is_exported(service: Service) -> None:
    await service.api.create_task(id="job")
    await service.api.event("job", "started")
    response = await service.client.get("/metrics")
    assert response.status_code == 200
    families = [
        family
        for family in text_string_to_metric_families(response.text)
        if family.name.startswith("taskstream_")
    ]
    # Beside every counter and histogram prometheus-client exports `<name>_created` (when it
    # started), which the text parser reads as a family of its own: bookkeeping, not a metric.
    accumulating = {family.name for family in families if family.type in CUMULATIVE}
    families = [
        family
        for family in families
        if not (
            family.name.endswith("_created") and family.name[: -len("_created")] in accumulating
        )
    ]
    exported = {name: kind for family in families for name, kind in series_of(family).items()}
    samples = await scrape(service.client)
    seen: dict[str, dict[str, set[str]]] = {}  # series -> label -> values, from real samples
    for name, labels in samples:
        for label, label_value in labels:
            seen.setdefault(name, {}).setdefault(label, set()).add(label_value)

    on_dashboard: set[str] = set()
    for where, expression in expressions() + variable_queries():
        # Quoted text blanked, not removed, so that positions in both strings agree.
        bare = STRING.sub(lambda quoted: '"' + "x" * (len(quoted[0]) - 2) + '"', expression)
        for match in SELECTOR.finditer(bare):
            name, ranged = match[1], match[3]
            assert name in exported, f"{where}: {name} is not in a scrape of /metrics"
            if not where.startswith("alert"):
                on_dashboard.add(name)
            if exported[name] in CUMULATIVE and not ranged:
                raise AssertionError(f"{where}: {name} read without a range (rate, increase)")
            if match[2] is None or name not in seen:
                continue  # no matchers, or no samples (yet) to know the labels by
            for label, operator, wanted in LABEL_MATCH.findall(
                expression[match.start(2) : match.end(2)]
            ):
                if label in TARGET_LABELS:
                    continue
                values = seen[name].get(label)
                assert values is not None, f"{where}: {name} has no label {label!r}"
                if operator == "=" or (operator == "=~" and re.fullmatch(r"[\w|]+", wanted)):
                    for alternative in wanted.split("|"):
                        assert alternative in values, f"{where}: {name}{{{label}={alternative!r}}}"
    shown = {family.name for family in families if series_of(family).keys() & on_dashboard}
    missing = {family.name for family in families} - shown
    assert not missing, f"exported but on no dashboard panel: {sorted(missing)}"


def test_expressions_parse_as_promql() -> None:
    """A real parse, where the ``promql-parser`` package (Rust's promql-parser) is installed."""
    parser = pytest.importorskip("promql_parser")
    for where, expression in expressions():
        try:
            parser.parse(expression)
        except Exception as error:  # its errors are plain exceptions with a message
            raise AssertionError(f"{where}: {error} in {expression!r}") from error
