"""The Prometheus rules in deploy/prometheus/: promtool accepts them and their unit tests pass;
every alert is documented, unit-tested firing and not firing, and reads only metrics the
services export."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from streamproc.metrics.catalog import QUALITY_METRICS, WORKER_METRICS
from tests.deploy.observability import (
    ALERTS_DOC,
    EXPECTED_WATCHERS,
    KUBERNETES_METRICS,
    OTHER_TEAMS_JOBS,
    ROOT,
    RULE_TESTS,
    RULES,
    alerts,
    github_anchor,
    kubernetes_metrics_read,
    promtool,
    queried_metrics,
    rules,
    target_down_jobs,
    watching,
)

SEVERITIES = {"critical", "warning", "info"}


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(list(rules()))} rules found" in done.stdout


def test_rule_unit_tests_pass() -> None:
    files = sorted(RULE_TESTS.glob("*.yml"))
    assert files, "no promtool unit tests in deploy/prometheus/tests/"
    done = promtool("test", "rules", *(str(f.relative_to(ROOT)) for f in files))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(files), done.stdout


def test_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    """prometheus.yml as the compose stack mounts it, its rule_files pointed at the repository's."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    config["rule_files"] = [str(RULES.parent / "*.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    done = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(list(rules()))} rules found" in done.stdout, done.stdout
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {job: watching(job) for job in jobs} == EXPECTED_WATCHERS


def test_target_down_alerts_watch_only_this_stacks_jobs() -> None:
    assert set(target_down_jobs()) == {"StreamprocTargetDown", "VllmTargetDown"}
    for job in OTHER_TEAMS_JOBS:
        assert watching(job) == [], f"{job} is another team's job, yet {watching(job)} watch it"


def test_vllm_rules_read_only_this_stacks_model_servers() -> None:
    """Every vllm:* selector of the rules names the stack's model-server jobs (its own
    ServiceMonitors and scrape configs set them), so another team's vLLM in the same
    Prometheus is neither recorded nor alerted on (deploy/prometheus/tests/vllm.test.yml runs it)."""
    own = {job for job in EXPECTED_WATCHERS if job.startswith("vllm")}
    read = 0
    for rule in rules():
        name = rule.get("record") or rule.get("alert")
        for metric, matchers in re.findall(r"(vllm:[\w:]+)\s*(?:\{([^}]*)\})?", rule["expr"]):
            read += 1
            job = re.search(r'(?<![\w])job\s*(=~|=)\s*"([^"]*)"', matchers or "")
            assert job, f"{name}: {metric} has no job matcher, so it reads every team's vLLM"
            operator, value = job.groups()
            matched = {j for j in (*own, *EXPECTED_WATCHERS, *OTHER_TEAMS_JOBS)
                       if (re.fullmatch(value, j) if operator == "=~" else j == value)}  # fmt: skip
            assert matched and matched <= own, f"{name}: {metric}{{job{operator}{value!r}}} selects {matched}"
    assert read, "no vllm:* metric in the rules"


def test_model_servers_get_longer_than_their_start_up_probe_before_alerting() -> None:
    """vLLM listens only once its model is loaded; the chart's startup probe allows that long."""
    chart_values = yaml.safe_load((ROOT / "helm" / "streamproc" / "values.yaml").read_text())
    startup = chart_values["vllm"]["startupProbe"]
    allowed = startup["periodSeconds"] * startup["failureThreshold"]
    rule = next(a for a in alerts() if a["alert"] == "VllmTargetDown")
    minutes = re.fullmatch(r"(\d+)m", rule["for"])
    assert minutes and int(minutes.group(1)) * 60 > allowed, (rule["for"], allowed)


def test_every_alert_is_documented_and_annotated() -> None:
    doc = ALERTS_DOC.read_text()
    anchors = {github_anchor(h) for h in re.findall(r"(?m)^#{2,4} (.+)$", doc)}
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), "alert names repeat"
    bases = set()
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in SEVERITIES, name
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], name
        base, _, anchor = annotations["runbook_url"].partition("#")
        bases.add(base)
        assert anchor == name.lower(), f"{name}: runbook_url anchor should be #{name.lower()}"
        assert anchor in anchors, f"{name}: docs/alerts.md has no section `### {name}`"
    # Absolute, so that Alertmanager and its receivers link them; one base, so that moving the
    # docs is one replacement (and the chart's monitoring.runbookBaseUrl replaces exactly it).
    [base] = bases
    assert re.fullmatch(r"https://[^\s#]+/docs/alerts\.md", base), f"runbook_url base {base!r}"
    assert f"`{base}`" in doc, "docs/alerts.md should name the runbook base the rules use"


def test_absent_job_alerts_name_exactly_this_stacks_jobs() -> None:
    """One absent() per job, exact names: absent() over a regex fires only when every job
    matching it is gone, and another team's job of a similar name would keep it quiet."""
    absent = {
        alert["alert"]: re.findall(r'absent\(up\{job="([^"]+)"\}\)', alert["expr"])
        for alert in alerts()
        if "absent(" in alert["expr"]
    }
    assert absent == {
        "StreamprocJobAbsent": ["streamproc-worker", "streamproc-quality"],
        "VllmJobAbsent": ["vllm", "vllm-embedding"],
    }
    for name, jobs in absent.items():
        expr = next(a["expr"] for a in alerts() if a["alert"] == name)
        assert expr == " or ".join(f'absent(up{{job="{job}"}})' for job in jobs), name
    assert {job for jobs in absent.values() for job in jobs} == set(EXPECTED_WATCHERS)


def _alert_tests() -> dict[str, dict[str, int]]:
    """Per alert: how many evaluations expect it firing and how many expect it silent."""
    seen: dict[str, dict[str, int]] = {}
    for path in RULE_TESTS.glob("*.yml"):
        spec: dict[str, Any] = yaml.safe_load(path.read_text())
        assert spec["rule_files"] == ["../rules/streamproc.rules.yml"], path
        for test in spec["tests"]:
            for case in test.get("alert_rule_test", []):
                counts = seen.setdefault(case["alertname"], {"firing": 0, "silent": 0})
                counts["firing" if case.get("exp_alerts") else "silent"] += 1
    return seen


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    seen = _alert_tests()
    for alert in alerts():
        name = alert["alert"]
        counts = seen.get(name, {"firing": 0, "silent": 0})
        assert counts["firing"] and counts["silent"], f"{name}: needs promtool tests firing and silent"
    unknown = set(seen) - {a["alert"] for a in alerts()}
    assert not unknown, f"tests for alerts that do not exist: {unknown}"


def test_recorded_names_follow_the_convention() -> None:
    for rule in rules():
        if "record" in rule:
            assert re.fullmatch(r"streamproc:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def _exported_names() -> set[str]:
    """What a scrape of the worker or the quality service can show, per the catalog."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    names: set[str] = set()
    for spec in (*WORKER_METRICS, *QUALITY_METRICS):
        base = spec.exported_name().removesuffix("_total")
        names.update(base + suffix for suffix in suffixes[spec.kind])
    return names


def test_rules_and_dashboards_read_only_cataloged_streamproc_metrics() -> None:
    """Names the services export; vLLM's names are checked against a live server by
    tests/integration/test_observability.py."""
    exported = _exported_names()
    unknown = {
        name: sorted(where)
        for name, where in queried_metrics().items()
        if name.startswith("streamproc_") and name not in exported
    }
    assert not unknown, f"queried but not in streamproc/metrics/catalog.py: {unknown}"
    others = {n for n in queried_metrics() if not n.startswith(("streamproc_", "vllm:"))}
    assert others == {"up"}, others
    assert kubernetes_metrics_read() == KUBERNETES_METRICS
