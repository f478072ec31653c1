"""Shared by the rule, dashboard and observability tests: the shipped rules and dashboards,
the PromQL in them, the metric names that PromQL reads, and promtool."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "streamproc.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
ALERTS_DOC = ROOT / "docs" / "alerts.md"


@functools.cache
def prometheus_tools() -> tuple[Path, Path]:
    """(promtool, prometheus), installed by scripts/tools/prometheus.sh when missing."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "tools" / "prometheus.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2:
        pytest.fail(
            f"scripts/tools/prometheus.sh could not provide promtool and prometheus "
            f"(install Debian's `prometheus` package): {done.stderr.strip()[-2000:]}",
            pytrace=False,
        )
    return Path(lines[0]), Path(lines[1])


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    tool, _ = prometheus_tools()
    return subprocess.run([str(tool), *args], capture_output=True, text=True, check=False, cwd=cwd)


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def rules() -> Iterator[dict[str, Any]]:
    for group in rule_groups():
        yield from group["rules"]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def target_down_jobs() -> dict[str, str]:
    """Per alert on `up` (a target down): the job regex it watches, anchored by Prometheus."""
    watched: dict[str, str] = {}
    for alert in alerts():
        if alert["expr"].lstrip().startswith("up"):
            match = re.fullmatch(r'up\{job=~"([^"]+)"\} == 0', alert["expr"].strip())
            assert match, f'{alert["alert"]}: expected up{{job=~"..."}} == 0, not {alert["expr"]!r}'
            watched[alert["alert"]] = match.group(1)
    return watched


#: Jobs of other teams sharing a Prometheus: no streamproc alert may watch them.
OTHER_TEAMS_JOBS = ("search-vllm", "vllm-llama-70b", "kubernetes-pods", "streamproc-worker-canary", "node")


#: Which alert watches each of the stack's scrape jobs for a down target (the compose jobs and
#: the chart's ServiceMonitor jobs are the same names): the model servers have their own, which
#: allows for loading a model.
EXPECTED_WATCHERS = {
    "streamproc-worker": ["StreamprocTargetDown"],
    "streamproc-quality": ["StreamprocTargetDown"],
    "vllm": ["VllmTargetDown"],
    "vllm-embedding": ["VllmTargetDown"],
}


def watching(job: str) -> list[str]:
    """The target-down alerts whose job pattern selects this job, as Prometheus matches it."""
    return sorted(alert for alert, pattern in target_down_jobs().items() if re.fullmatch(pattern, job))


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    expr: str


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panel_queries() -> list[PanelQuery]:
    return [
        PanelQuery(name, panel["title"], target["expr"])
        for name, board in dashboards().items()
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


# What Grafana puts in place of its variables, for checking the expressions outside Grafana.
# Dashboard variables are multi-value label filters with ".*" for All; Grafana's own
# interval variables become durations.
_GRAFANA_INTERVALS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


def substitute_variables(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return _GRAFANA_INTERVALS.get(name, ".*")

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
_KEYWORDS |= {"offset", "bool", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers outside label matchers, ranges and
    grouping clauses that are not functions, aggregations or keywords."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w:])\d[\w.]*", " ", text)  # numbers, durations
    names = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


#: Metrics of exporters outside this stack that rules read on Kubernetes only: the kubelet's
#: volume figures (StreamprocQualityVolumeFilling) and dcgm-exporter's last Xid code
#: (VllmGpuXidError). No compose or test Prometheus scrapes them, so queried_metrics() leaves
#: them out; promtool's unit tests cover their rules.
KUBERNETES_METRICS = frozenset(
    {"kubelet_volume_stats_available_bytes", "kubelet_volume_stats_capacity_bytes", "DCGM_FI_DEV_XID_ERRORS"}
)


def queried_metrics() -> dict[str, set[str]]:
    """Every metric name the rules and the dashboards read (recorded names and
    KUBERNETES_METRICS excluded), with where each is read."""
    return {name: where for name, where in _all_queried_metrics().items() if name not in KUBERNETES_METRICS}


def kubernetes_metrics_read() -> set[str]:
    """Which of KUBERNETES_METRICS the rules and dashboards read."""
    return set(_all_queried_metrics()) & KUBERNETES_METRICS


def _all_queried_metrics() -> dict[str, set[str]]:
    recorded = recorded_names()
    sources: dict[str, set[str]] = {}
    exprs = [(f"rule {r.get('record') or r.get('alert')}", r["expr"]) for r in rules()]
    exprs += [(f"{q.dashboard}: {q.panel}", substitute_variables(q.expr)) for q in panel_queries()]
    for name, board in dashboards().items():
        for variable in board.get("templating", {}).get("list", []):
            if variable["type"] == "query":  # label_values(metric, label)
                metric = re.fullmatch(r"label_values\(([\w:]+),\s*\w+\)", variable["query"])
                assert metric, f"{name}: variable {variable['name']} is not label_values(metric, label)"
                exprs.append((f"{name}: variable {variable['name']}", metric.group(1)))
    for where, expr in exprs:
        for name in metric_names(expr) - recorded:
            sources.setdefault(name, set()).add(where)
    return sources


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")
