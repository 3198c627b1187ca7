"""The Grafana dashboard of deploy/components/monitoring against the metrics the operator exports.

We test these aspects:
- every PromQL expression of the dashboard (its panels' queries and its variables' `label_values`) names
  only metrics the operator's registry exports, as Prometheus sees them (a counter's `_total`, a
  histogram's `_bucket`, `_sum` and `_count`), read from the registry itself, never from a list here;
- the dashboard shows what the issue asks for: builds per minute by result, p50 and p95 duration, queue
  depth, the cache-hit ratio and the image size;
- the metric-name reader finds the names in the shapes of query the dashboard uses, and nothing else
  (functions, aggregations, label names, strings, ranges, Grafana variables), so that an unknown metric in
  a new query fails the first test.
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servicebuild.admission import BuildSlots
from servicebuild.metrics import OperatorMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "components" / "monitoring" / "dashboard.json"
KEYWORDS = {"and", "or", "unless", "bool", "inf", "nan"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def exported() -> set[str]:
    """Every series name the operator's registry exposes to Prometheus."""
    registry = OperatorMetrics(BuildSlots().load).registry
    return {
        family.name + suffix for family in registry.collect() for suffix in SUFFIXES.get(family.type, ("",))
    }


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, label matchers, ranges,
    grouping clauses, offsets, functions, keywords and numbers are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\boffset\s+-?\w+|\$\w+|\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", " ", expr)
    return {
        match.group()
        for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr)
        if not expr[match.end() :].lstrip().startswith("(") and match.group().lower() not in KEYWORDS
    }


def variable_names(query: str) -> set[str]:
    """The metric a Grafana `label_values(metric, label)` variable reads."""
    found = re.fullmatch(
        r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{[^}]*\})?\s*,\s*\w+\s*\)", query
    )
    assert found is not None, f"not a label_values query: {query}"
    return {found.group(1)}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries() -> Iterator[tuple[str, set[str]]]:
    """Every query of the dashboard, named by where it is, with the metrics it reads."""
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            yield f"{panel['title']}/{target['refId']}", metric_names(target["expr"])
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            yield f"${variable['name']}", variable_names(variable["query"]["query"])


@pytest.mark.parametrize(("where", "names"), [pytest.param(*query, id=query[0]) for query in queries()])
def test_every_query_names_only_metrics_the_operator_exports(where: str, names: set[str]) -> None:
    assert names, f"{where} reads no metric"
    assert names <= exported(), f"{where} reads metrics the operator does not export: {names - exported()}"


def test_the_dashboard_shows_builds_durations_queues_cache_and_images() -> None:
    exprs = {
        panel["title"]: [target["expr"] for target in panel["targets"]] for panel in dashboard()["panels"]
    }
    assert any(
        "servicebuild_builds_total" in expr and "by (result)" in expr
        for expr in exprs["Builds per minute by result"]
    )
    duration = " ".join(exprs["Build duration"])
    assert "histogram_quantile(0.5," in duration
    assert "histogram_quantile(0.95," in duration
    assert "servicebuild_build_duration_seconds_bucket" in duration
    assert any("servicebuild_builds_queued" in expr for expr in exprs["Queue depth"])
    assert any("servicebuild_cache_hit_ratio" in expr for expr in exprs["Cache-hit ratio"])
    assert any("servicebuild_image_size_bytes" in expr for expr in exprs["Image size"])


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("servicebuild_image_size_bytes", {"servicebuild_image_size_bytes"}),
        (
            'sum by (result) (rate(servicebuild_builds_total{namespace=~"$namespace"}[$__interval])) * 60',
            {"servicebuild_builds_total"},
        ),
        (
            'histogram_quantile(0.95, sum by (le) (rate(build_seconds_bucket{result="Succeeded"}[5m])))',
            {"build_seconds_bucket"},
        ),
        (
            "sum(rate(a_sum[1h])) / sum(rate(a_count[1h])) > 0.25 and on (job) up offset 5m",
            {"a_sum", "a_count", "up"},
        ),
        ('count without (kind) (errors_total{kind="by (x) rate(y)"}) > 1e3', {"errors_total"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_an_unknown_metric_is_not_exported() -> None:
    names = metric_names("sum(rate(servicebuild_builds_failed_total[5m]))")
    assert names == {"servicebuild_builds_failed_total"}
    assert not names <= exported()
    assert {
        "servicebuild_builds_total",
        "servicebuild_cache_hit_ratio_bucket",
        "process_open_fds",
    } <= exported()
