"""The Grafana dashboards in deploy/grafana/: generated from deploy/grafana/build.py, well
formed, every panel's PromQL accepted by promtool, and provisioned where the compose stack
mounts them."""

from __future__ import annotations

import importlib.util
import itertools
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.observability import (
    DASHBOARDS,
    ROOT,
    dashboards,
    panel_queries,
    promtool,
    substitute_variables,
)

GRAFANA = ROOT / "deploy" / "grafana"
_DATASOURCE = {"type": "object", "required": ["type", "uid"], "properties": {"type": {"const": "prometheus"}}}
# Grafana publishes no schema for dashboard JSON that a validator could load offline; this
# one holds what the provisioning and the panels here rely on.
DASHBOARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["uid", "title", "panels", "schemaVersion", "templating", "time", "tags"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-z0-9-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "tags": {"type": "array", "contains": {"const": "streamproc"}},
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "contains": {
                        "type": "object",
                        "required": ["name", "type", "query"],
                        "properties": {
                            "name": {"const": "datasource"},
                            "type": {"const": "datasource"},
                            "query": {"const": "prometheus"},
                        },
                    },
                }
            },
        },
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos"],
                "properties": {
                    "id": {"type": "integer"},
                    "title": {"type": "string", "minLength": 1},
                    "gridPos": {
                        "type": "object",
                        "required": ["x", "y", "w", "h"],
                        "properties": {
                            "x": {"type": "integer", "minimum": 0, "maximum": 23},
                            "w": {"type": "integer", "minimum": 1, "maximum": 24},
                            "h": {"type": "integer", "minimum": 1},
                            "y": {"type": "integer", "minimum": 0},
                        },
                    },
                },
                "if": {"properties": {"type": {"const": "row"}}},
                "then": {"required": ["collapsed"]},
                "else": {
                    "required": ["datasource", "targets", "fieldConfig"],
                    "properties": {
                        "type": {"enum": ["timeseries", "stat", "gauge", "table", "bargauge", "heatmap"]},
                        "datasource": _DATASOURCE,
                        "targets": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["expr", "refId", "datasource"],
                                "properties": {
                                    "expr": {"type": "string", "minLength": 1},
                                    "refId": {"type": "string", "pattern": "^[A-Z]$"},
                                    "datasource": _DATASOURCE,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_committed_dashboards_equal_the_generator_output() -> None:
    rendered: dict[str, str] = _generator().render()
    committed = {path.name: path.read_text() for path in DASHBOARDS.glob("*.json")}
    assert set(committed) == set(rendered), "run `python deploy/grafana/build.py` and commit the JSON"
    for name, text in rendered.items():
        assert committed[name] == text, f"{name} is stale: run `python deploy/grafana/build.py`"


def test_the_three_dashboards_exist() -> None:
    assert {board["uid"] for board in dashboards().values()} == {
        "streamproc-overview",
        "streamproc-quality",
        "streamproc-vllm",
    }


@pytest.mark.parametrize("name", sorted(p.name for p in DASHBOARDS.glob("*.json")))
def test_dashboard_is_well_formed(name: str) -> None:
    board = dashboards()[name]
    jsonschema.validate(board, DASHBOARD_SCHEMA)
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
    for panel in panels:
        ref_ids = [t["refId"] for t in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids)), f"{name}: {panel['title']}: refIds repeat"
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, f"{name}: {panel['title']} too wide"
        if panel["type"] == "timeseries":
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{name}: {panel['title']} has no unit"
    for a, b in itertools.combinations(panels, 2):
        assert not _overlap(a["gridPos"], b["gridPos"]), f"{name}: {a['title']} overlaps {b['title']}"
    variables = {v["name"] for v in board["templating"]["list"]}
    used = {m for q in panel_queries() if q.dashboard == name for m in re.findall(r"\$\{?(\w+)", q.expr)}
    assert used - {"__rate_interval", "__interval", "__range"} <= variables, f"{name}: undefined variables"


def test_vllm_dashboard_keeps_the_two_model_servers_apart() -> None:
    """The embedding server's row reads its scrape job only, the other rows every other job;
    compose's Prometheus (and the chart's ServiceMonitor, tests/deploy/test_helm.py) name it so."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert {"vllm", "vllm-embedding"} <= {job["job_name"] for job in config["scrape_configs"]}
    rows: dict[str, list[str]] = {}
    row = ""
    for panel in dashboards()["vllm.json"]["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
        for target in panel.get("targets", []):
            rows.setdefault(row, []).append(target["expr"])
    embedding = [title for title in rows if title.startswith("Embedding server")]
    assert len(embedding) == 1 and len(rows) > 1, list(rows)
    for title, exprs in rows.items():
        selector = 'job="vllm-embedding"' if title in embedding else 'job!="vllm-embedding"'
        assert all(selector in expr for expr in exprs), (title, exprs)


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
_KEYWORDS |= {"offset", "bool", "inf", "nan"}
_SELECTOR = re.compile(r"(?<![\w:$])([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?")
_NOT_SELECTORS = re.compile(
    r'"(?:\\.|[^"\\])*"|\[[^\]]*\]|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)'
)


def _selectors(expr: str) -> list[tuple[str, str]]:
    """(metric, its label matchers) of every selector of a panel's PromQL."""
    text = _NOT_SELECTORS.sub(lambda m: m.group() if m.group().startswith('"') else " ", expr)
    found = []
    for match in _SELECTOR.finditer(text):
        name, matchers = match.group(1), match.group(2) or ""
        following = text[match.end() :].lstrip()
        if following.startswith("(") or re.match(r"(by|without)\s*\(", following) or name in _KEYWORDS:
            continue
        found.append((name, matchers))
    return found


def test_every_panel_reads_the_namespaces_picked() -> None:
    """One release of the chart per namespace: each dashboard's Namespace variable scopes every
    selector of every panel (compose's series have no namespace, which "All" matches too)."""
    for name, board in dashboards().items():
        variable = next(v for v in board["templating"]["list"] if v["name"] == "namespace")
        assert (variable["includeAll"], variable["allValue"], variable["multi"]) == (True, ".*", True), name
        assert re.fullmatch(r"label_values\([\w:]+, namespace\)", variable["query"]), name
    checked = 0
    for query in panel_queries():
        selectors = _selectors(query.expr)
        assert selectors, (query.dashboard, query.panel, query.expr)
        for metric, matchers in selectors:
            assert 'namespace=~"$namespace"' in matchers, (query.dashboard, query.panel, metric, query.expr)
            checked += 1
    assert checked > len(panel_queries())


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each expression as a recording rule, Grafana's variables replaced."""
    queries = panel_queries()
    assert len(queries) > 40
    rules = []
    for index, query in enumerate(queries):
        expr = substitute_variables(query.expr)
        assert "$" not in expr, f"{query.dashboard}: {query.panel}: unreplaced variable in {expr}"
        rules.append({"record": f"panel:query_{index}:check", "expr": expr})
    path = tmp_path / "panels.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, _name_failures(done.stdout + done.stderr, queries)
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def _name_failures(output: str, queries: list[Any]) -> str:
    """promtool names the failing rule by index; say which panel that is."""
    named = [
        f"{queries[int(i)].dashboard}: {queries[int(i)].panel}: {queries[int(i)].expr}"
        for i in re.findall(r"query_(\d+)", output)
    ]
    return output + "\n" + "\n".join(named)


def test_a_broken_panel_query_is_caught(tmp_path: Path) -> None:
    """The check above can fail: promtool rejects a query with a syntax error."""
    path = tmp_path / "broken.rules.yml"
    broken = substitute_variables("sum by (topic) (rate(streamproc_events_consumed_total[$__rate_interval])")
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "a:b:c", "expr": broken}]}]})
    )
    assert promtool("check", "rules", str(path)).returncode != 0


def test_provisioning_matches_the_compose_mounts() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "streamproc.yml").read_text())
    assert [p["options"]["path"] for p in providers["providers"]] == [mounts["./grafana/dashboards"]]
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
