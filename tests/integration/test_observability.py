"""The shipped rules and dashboards against the real services: a worker, the quality service
and vLLM moderate and score a few items, a real Prometheus server scrapes all three and
evaluates deploy/prometheus/rules/, and every target is up, every rule evaluates without
error, and every metric a rule or a dashboard panel reads is exported by one of them."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from streamproc.config import TopicSettings
from streamproc.dev.devstack import Broker, ManagedProcess, VllmServer, free_port, wait_for_port
from streamproc.schemas import encode
from tests.deploy.observability import RULES, prometheus_tools, queried_metrics
from tests.integration.conftest import LOGS, ROOT, StartQuality, StartWorker, wait_until
from tests.integration.kafka_io import produce
from tests.integration.test_quality import REVIEWED, SECOND_LABELER, TRUTH, label, moderate

pytestmark = pytest.mark.integration

# Recorded series that must hold data once the services have worked: the rules' label
# matching and aggregation agree with what the services really export.
RECORDED_WITH_DATA = (
    "streamproc:events_consumed:rate5m",
    "streamproc:verdicts:rate5m",
    "streamproc:model_requests:rate5m",
    "streamproc:end_to_end_latency_seconds:p99_5m",
    "streamproc:consumer_lag_records:sum",
    "streamproc:shadow_agreement:rate1h",
    "streamproc:quality_f1_ratio:live",
    "streamproc:quality_automation_ratio:live",
    "streamproc:vllm_prompt_tokens:rate5m",
)
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


class Prometheus:
    """The Prometheus server of the OS package, on a free loopback port."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        _, server = prometheus_tools()
        self.port = free_port()
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.process = ManagedProcess(
            "prometheus",
            [
                str(server),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            LOGS / f"prometheus-{uuid.uuid4().hex[:6]}.log",
        )

    def __enter__(self) -> Prometheus:
        self.process.start()
        if not wait_for_port("127.0.0.1", self.port, timeout=30):
            self.process.stop()
            pytest.fail(f"prometheus did not start; its log:\n{self.process.log_tail()}", pytrace=False)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop()

    def api(self, path: str, **params: str) -> Any:
        answer = httpx.get(f"http://127.0.0.1:{self.port}/api/v1/{path}", params=params, timeout=10)
        answer.raise_for_status()
        body = answer.json()
        assert body["status"] == "success", body
        return body["data"]


def _scrape_config(worker_port: int, quality_port: int, vllm: VllmServer) -> dict[str, Any]:
    """Job names as in deploy/prometheus/prometheus.yml; one-second intervals for the test."""
    vllm_address = urlsplit(vllm.base_url).netloc
    jobs = {
        "streamproc-worker": f"127.0.0.1:{worker_port}",
        "streamproc-quality": f"127.0.0.1:{quality_port}",
        "vllm": vllm_address,
    }
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in jobs.items()
        ],
    }


def _declared_names(url: str) -> set[str]:
    """Every name a /metrics page declares, with the suffixes its samples carry."""
    names: set[str] = set()
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


async def _moderate_and_label(broker: Broker, topics: TopicSettings, start_worker: StartWorker) -> int:
    """Items through a worker with a shadow pack and audit sampling, then labels for every
    verdict (two labelers on some, one review outcome): every family gets samples."""
    worker = start_worker(
        STREAMPROC_POLICY__PATHS=json.dumps([str(ROOT / "policies"), str(ROOT / "policies" / "candidates")]),
        STREAMPROC_AUDIT__BASE_RATE="0.4",
    )
    moderated = await moderate(broker, topics, worker)
    by_id = moderated.by_id
    labels = [label(v, f"qa-{v.content_id}", TRUTH.get(v.content_id, [])) for v in moderated.live]
    labels += [label(by_id[c], f"qa2-{c}", truth, labeler_id="qa-2") for c, truth in SECOND_LABELER.items()]
    labels.append(
        label(by_id[REVIEWED], "review-1", [], source="review", decision="approve", labeler_id="rev-9")
    )
    await produce(broker.bootstrap, topics.labels, [(lab.content_id.encode(), encode(lab)) for lab in labels])
    return worker.metrics_port


def _rules_not_evaluated(rules: dict[str, Any]) -> list[str]:
    return [
        rule["name"]
        for group in rules["groups"]
        for rule in group["rules"]
        if rule["health"] == "unknown" or rule["lastEvaluation"].startswith("0001-")
    ]


async def test_prometheus_scrapes_the_services_and_evaluates_every_rule(
    broker: Broker,
    vllm: VllmServer,
    topics: TopicSettings,
    start_worker: StartWorker,
    start_quality: StartQuality,
    tmp_path: Path,
) -> None:
    worker_port = await _moderate_and_label(broker, topics, start_worker)
    quality = start_quality()
    await wait_until(
        lambda: (
            quality.total("streamproc_quality_f1_ratio") > 0
            and quality.total("streamproc_quality_shadow_compared") > 0
            and quality.total("streamproc_quality_human_verdicts") > 0
        ),
        "the quality service to export accuracy, shadow and human-verdict figures",
    )

    with Prometheus(_scrape_config(worker_port, quality.metrics_port, vllm), tmp_path) as prom:

        def targets_up() -> bool:
            active = prom.api("targets")["activeTargets"]
            return len(active) == 3 and all(t["health"] == "up" for t in active)

        await wait_until(targets_up, "Prometheus to scrape all three targets", within=60)
        # Rates need two scrapes; then every rule has been evaluated at least once.
        await asyncio.sleep(3)
        await wait_until(
            lambda: not _rules_not_evaluated(prom.api("rules")), "every rule to be evaluated", within=60
        )
        rules = prom.api("rules")
        unhealthy = {
            rule["name"]: rule.get("lastError")
            for group in rules["groups"]
            for rule in group["rules"]
            if rule["health"] != "ok"
        }
        assert not unhealthy, f"rules failing to evaluate: {unhealthy}"
        loaded = sum(len(group["rules"]) for group in rules["groups"])
        assert loaded == sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])

        def recorded_with_data() -> list[str]:
            return [name for name in RECORDED_WITH_DATA if not prom.api("query", query=name)["result"]]

        await wait_until(lambda: not recorded_with_data(), "recorded series to hold data", within=60)

        in_prometheus = set(prom.api("label/__name__/values"))

    exported = in_prometheus | _declared_names(f"http://127.0.0.1:{worker_port}/metrics")
    exported |= _declared_names(f"http://127.0.0.1:{quality.metrics_port}/metrics")
    exported |= _declared_names(f"http://{urlsplit(vllm.base_url).netloc}/metrics")
    missing = {name: sorted(where) for name, where in queried_metrics().items() if name not in exported}
    assert not missing, f"rules or dashboard panels read metrics nobody exports: {missing}"
    # the check above is not vacuous: vLLM's and both services' names are among those read
    read = set(queried_metrics())
    assert any(n.startswith("vllm:") for n in read) and "streamproc_quality_f1_ratio" in read
