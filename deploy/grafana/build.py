"""Grafana dashboards for streamproc, built with Grafana's grafana-foundation-sdk.

    python deploy/grafana/build.py           # rewrite deploy/grafana/dashboards/*.json
    python deploy/grafana/build.py --check   # exit 1 if the committed JSON differs

The JSON files are generated: edit this file, run it, commit both (tests/deploy/test_dashboards.py
keeps them equal). Panels read the recording rules of deploy/prometheus/rules/ where one exists,
so dashboards and alerts show the same figures.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig, VizLegendOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)

OUT = Path(__file__).resolve().parent / "dashboards"
# Every query goes to the Prometheus picked in the dashboard's `datasource` variable, so the
# same JSON works with any datasource uid (compose, a Grafana sidecar in Kubernetes).
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["streamproc", "generated"]


@dataclass(frozen=True)
class Q:
    """One query of a panel: PromQL and its legend."""

    expr: str
    legend: str = ""


# Every selector of every panel is scoped to the namespaces picked in the `namespace` variable
# (one release of the chart per namespace; "All" also matches series without the label, as the
# compose stack's have none).
NAMESPACE_MATCHER = 'namespace=~"$namespace"'
_STRING = re.compile(r'"(?:\\.|[^"\\])*"')
_COPIED = re.compile(
    r'"(?:\\.|[^"\\])*"'  # string literals
    r"|\[[^\]]*\]"  # ranges and subqueries
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"  # label lists
    r"|\$\w+|\$\{\w+\}"  # Grafana variables
    r"|(?<![\w:])\d[\w.]*"  # numbers and durations
)
_IDENTIFIER = re.compile(r"(?<![\w:])[A-Za-z_:][\w:]*")
_CALL = re.compile(r"\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\(")  # f(...), sum by (l) (...)
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
_KEYWORDS |= {"offset", "bool", "inf", "nan"}


def _matchers_end(expr: str, brace: int) -> int:
    """The index after the `}` closing the label matchers opened at ``brace``."""
    position = brace + 1
    while expr[position] != "}":
        string = _STRING.match(expr, position)
        position = string.end() if string else position + 1
    return position + 1


def in_namespace(expr: str) -> str:
    """``expr`` with NAMESPACE_MATCHER in each of its selectors: every metric name that is not
    a function, an aggregation or a keyword, outside strings, ranges and label lists."""
    out, position = [], 0
    while position < len(expr):
        copied = _COPIED.match(expr, position)
        name = None if copied else _IDENTIFIER.match(expr, position)
        if copied or not name:
            end = copied.end() if copied else position + 1
            out.append(expr[position:end])
            position = end
            continue
        position = name.end()
        out.append(name.group())
        if _CALL.match(expr, position) or name.group().lower() in _KEYWORDS:
            continue
        spaces = len(expr[position:]) - len(expr[position:].lstrip())
        if expr[position + spaces : position + spaces + 1] == "{":
            brace = position + spaces
            end = _matchers_end(expr, brace)
            inner = expr[brace + 1 : end - 1].strip()
            out.append(expr[position:brace] + "{" + NAMESPACE_MATCHER + (", " + inner if inner else "") + "}")
            position = end
        else:
            out.append("{" + NAMESPACE_MATCHER + "}")
    return "".join(out)


def graph(
    title: str, unit: str, *queries: Q, description: str = "", stacked: bool = False
) -> timeseries.Panel:
    """A time series panel, half the dashboard's width, its legend a table of last and max."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(12)
        .height(8)
        .fill_opacity(10)
        .legend(
            VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "max"])
        )
    )
    for index, query in enumerate(queries):
        panel = panel.with_target(
            prometheus.Dataquery()
            .ref_id(chr(ord("A") + index))
            .datasource(DATASOURCE)
            .expr(in_namespace(query.expr))
            .legend_format(query.legend or "__auto")
        )
    if stacked:
        panel = panel.stacking(StackingConfig().mode(common.StackingMode.NORMAL))
    if unit == "percentunit":
        panel = panel.min(0).max(1)
    return panel


def datasource_variable() -> db.DatasourceVariable:
    return db.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def label_variable(name: str, label: str, metric: str) -> db.QueryVariable:
    """A multi-select variable over one label's values; "All" matches every value."""
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, {name})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def base(uid: str, title: str, description: str, namespaces_of: str) -> db.Dashboard:
    """A dashboard with the datasource and namespace variables; ``namespaces_of`` names a
    metric whose series carry the namespaces to offer."""
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_variable())
        .with_variable(label_variable("namespace", "Namespace", namespaces_of))
    )


def overview() -> db.Dashboard:
    """The workers: throughput, decisions, latency, backpressure, lag, errors, prefix cache."""
    return (
        base(
            "streamproc-overview",
            "streamproc / Overview",
            "Workers: throughput and decisions, latency, in-flight items and the adaptive limit, "
            "consumer lag, dead letters, model errors and circuit, prefix cache.",
            "streamproc_events_consumed_total",
        )
        .with_row(db.Row("Throughput and decisions"))
        .with_panel(
            graph(
                "Records consumed",
                "reqps",
                Q("sum by (topic) (streamproc:events_consumed:rate5m)", "{{topic}}"),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Verdicts by decision",
                "reqps",
                Q("sum by (decision) (streamproc:verdicts:rate5m)", "{{decision}}"),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Reject and review verdicts by deciding category",
                "reqps",
                Q(
                    'sum by (category, decision) (streamproc:verdicts:rate5m{decision!="approve"})',
                    "{{decision}} {{category}}",
                ),
                description="category is the category that decided, `rule` for a rule, "
                "`inference_error` for items held or escalated after model failures.",
            )
        )
        .with_panel(
            graph(
                "Rule matches and model calls saved",
                "reqps",
                Q(
                    "sum by (stage, rule) (rate(streamproc_rule_matches_total[$__rate_interval]))",
                    "{{stage}} {{rule}}",
                ),
                Q("sum(rate(streamproc_model_calls_saved_total[$__rate_interval]))", "model calls saved"),
            )
        )
        .with_row(db.Row("Latency"))
        .with_panel(
            graph(
                "End-to-end latency (event created → verdict)",
                "s",
                Q("streamproc:end_to_end_latency_seconds:p50_5m", "p50 {{content_type}}"),
                Q("streamproc:end_to_end_latency_seconds:p90_5m", "p90 {{content_type}}"),
                Q("streamproc:end_to_end_latency_seconds:p99_5m", "p99 {{content_type}}"),
                description="Includes time spent waiting in Kafka; StreamprocEndToEndLatencyHigh "
                "fires when p99 stays over 30 s.",
            )
        )
        .with_panel(
            graph(
                "Processing and model request latency",
                "s",
                Q("streamproc:processing_latency_seconds:p99_5m", "processing p99 {{content_type}}"),
                Q("streamproc:model_request_latency_seconds:p50_5m", "model request p50"),
                Q("streamproc:model_request_latency_seconds:p99_5m", "model request p99"),
            )
        )
        .with_row(db.Row("Concurrency and backpressure"))
        .with_panel(
            graph(
                "In flight and the adaptive limit",
                "short",
                Q("streamproc_items_in_flight", "items {{instance}}"),
                Q("streamproc_model_requests_in_flight", "model requests {{instance}}"),
                Q("streamproc_model_prompts_in_flight", "model prompts {{instance}}"),
                Q("streamproc_model_concurrency_limit", "limit (prompts) {{instance}}"),
                description="Items taken from Kafka and not yet acknowledged; model requests awaiting "
                "an answer and the prompts they carry; how many prompts the adaptive limit allows.",
            )
        )
        .with_panel(
            graph(
                "Consumption paused",
                "short",
                Q("streamproc_consumption_paused", "{{instance}}"),
                description="1 while a worker has paused fetching: window full or model server unavailable.",
            )
        )
        .with_panel(
            graph(
                "Consumer lag by topic",
                "short",
                Q("streamproc:consumer_lag_records:sum", "{{topic}}"),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Consumer lag by partition",
                "short",
                Q(
                    "max by (topic, partition) (streamproc_consumer_lag_records)",
                    "{{topic}}/{{partition}}",
                ),
            )
        )
        .with_row(db.Row("Errors"))
        .with_panel(
            graph(
                "Dead letters by reason",
                "reqps",
                Q("sum by (reason) (streamproc:dead_letters:rate5m)", "{{reason}}"),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Model errors by kind",
                "reqps",
                Q("sum by (kind) (streamproc:inference_errors:rate5m)", "{{kind}}"),
                Q("sum(rate(streamproc_inference_retries_total[$__rate_interval]))", "retries"),
            )
        )
        .with_panel(
            graph(
                "Model error ratio",
                "percentunit",
                Q("streamproc:inference_errors:ratio_rate5m", "{{job}}"),
                description="Failed model requests over all requests, circuit-open refusals excluded.",
            )
        )
        .with_panel(
            graph(
                "Circuit open",
                "short",
                Q("streamproc_model_circuit_open", "{{instance}}"),
                description="1 while the worker leaves the model server alone after repeated failures.",
            )
        )
        .with_panel(
            graph(
                "Offset commits and rebalances",
                "ops",
                Q(
                    "sum by (result) (rate(streamproc_offset_commits_total[$__rate_interval]))",
                    "commits {{result}}",
                ),
                Q(
                    "sum by (event) (rate(streamproc_rebalances_total[$__rate_interval]))",
                    "partitions {{event}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Policy versions served",
                "short",
                Q("count by (name, version) (streamproc_policy_info)", "{{name}} {{version}}"),
                Q(
                    "sum by (result) (increase(streamproc_policy_reloads_total[$__rate_interval]))",
                    "reloads {{result}}",
                ),
                description="Worker processes serving each pack version; reloads applied or rejected.",
            )
        )
        .with_row(db.Row("Model server"))
        .with_panel(
            graph(
                "Prefix-cache hit rate",
                "percentunit",
                Q("streamproc:cached_prompt_tokens:ratio_rate5m", "reported to workers ({{job}})"),
                Q("streamproc:vllm_prefix_cache_hit:ratio_rate5m", "vLLM {{model_name}}"),
                description="Share of prompt tokens served from vLLM's prefix cache: as the answers' "
                "usage reports it to the workers, and from vLLM's own counters.",
            )
        )
        .with_panel(
            graph(
                "Model requests and generated tokens per item",
                "short",
                Q(
                    "sum by (scorer) (rate(streamproc_model_requests_per_item_sum[$__rate_interval]))"
                    " / sum by (scorer) (rate(streamproc_model_requests_per_item_count[$__rate_interval]))",
                    "requests {{scorer}}",
                ),
                Q(
                    "sum by (scorer) (rate(streamproc_completion_tokens_per_item_sum[$__rate_interval]))"
                    " / sum by (scorer)"
                    " (rate(streamproc_completion_tokens_per_item_count[$__rate_interval]))",
                    "tokens {{scorer}}",
                ),
            )
        )
    )


_VERSION = 'policy_version=~"$policy_version"'
_LIVE = f'mode="live", {_VERSION}, category=~"$category"'


def quality() -> db.Dashboard:
    """Accuracy per category and policy version, automation, shadow agreement, labels."""
    return (
        base(
            "streamproc-quality",
            "streamproc / Quality",
            "Accuracy of the automated verdicts against human labels, per category and policy "
            "version; automation rate; shadow packs against live; labels and labelers.",
            "streamproc_quality_pairs",
        )
        .with_variable(label_variable("policy_version", "Policy version", "streamproc_quality_pairs"))
        .with_variable(label_variable("category", "Category", "streamproc_quality_f1_ratio"))
        .with_row(db.Row("Accuracy (live verdicts)"))
        .with_panel(
            graph(
                "Violations caught, any category (live and shadow)",
                "percentunit",
                *(
                    Q(
                        f"streamproc_quality_violation_{figure}_ratio{{{_VERSION}}}",
                        f"{figure} {{{{policy_version}}}} {{{{mode}}}}",
                    )
                    for figure in ("f1", "precision", "recall")
                ),
                description="An item violates when its label names any category; it is flagged when "
                "the verdict is review or reject, whatever categories it names. Weighted as the "
                "categories' figures; live and shadow verdicts.",
            )
        )
        .with_panel(
            graph(
                "F1 by category",
                "percentunit",
                Q(f"streamproc_quality_f1_ratio{{{_LIVE}}}", "{{policy_version}} {{category}}"),
                Q(
                    f"streamproc:quality_f1_ratio:avg7d_offset1d{{{_LIVE}}}",
                    "baseline {{policy_version}} {{category}}",
                ),
                description="Baseline: the average of the 7 days before yesterday; "
                "StreamprocQualityF1Drop fires 0.05 below it.",
            )
        )
        .with_panel(
            graph(
                "Precision by category",
                "percentunit",
                Q(f"streamproc_quality_precision_ratio{{{_LIVE}}}", "{{policy_version}} {{category}}"),
            )
        )
        .with_panel(
            graph(
                "Recall by category",
                "percentunit",
                Q(f"streamproc_quality_recall_ratio{{{_LIVE}}}", "{{policy_version}} {{category}}"),
            )
        )
        .with_panel(
            graph(
                "Pairs scored and excluded",
                "short",
                Q(f"streamproc_quality_pairs{{{_VERSION}}}", "scored {{policy_version}} {{mode}}"),
                Q(
                    f"streamproc_quality_pairs_excluded{{{_VERSION}}}",
                    "excluded {{policy_version}} {{mode}} {{reason}}",
                ),
            )
        )
        .with_row(db.Row("Automation and shadow packs"))
        .with_panel(
            graph(
                "Automation rate",
                "percentunit",
                Q(f"streamproc_quality_automation_ratio{{{_VERSION}}}", "{{policy_version}}"),
                Q(
                    f"streamproc:quality_automation_ratio:avg7d_offset1d{{{_VERSION}}}",
                    "baseline {{policy_version}}",
                ),
                description="Share of live verdicts decided without a human.",
            )
        )
        .with_panel(
            graph(
                "Human verdicts overturning the automated decision",
                "percentunit",
                Q(
                    "sum by (policy_version)"
                    f' (streamproc_quality_human_verdicts{{overturned="true", {_VERSION}}})'
                    f" / sum by (policy_version) (streamproc_quality_human_verdicts{{{_VERSION}}})",
                    "{{policy_version}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Shadow agreement with live",
                "percentunit",
                Q(f"streamproc_quality_shadow_agreement_ratio{{{_VERSION}}}", "joined {{policy_version}}"),
                Q(
                    'sum by (policy) (streamproc:shadow_agreement:rate1h{agreed="true"})'
                    " / sum by (policy) (streamproc:shadow_agreement:rate1h)",
                    "last hour {{policy}}",
                ),
                description="Joined: every revision with a live and a shadow verdict, by shadow version "
                "(quality service). Last hour: as the workers decided, by pack name.",
            )
        )
        .with_panel(
            graph(
                "Shadow verdicts by decision",
                "reqps",
                Q(
                    "sum by (policy, decision) (rate(streamproc_shadow_verdicts_total[$__rate_interval]))",
                    "{{policy}} {{decision}}",
                ),
                Q(
                    "sum by (policy) (rate(streamproc_shadow_failures_total[$__rate_interval]))",
                    "failures {{policy}}",
                ),
            )
        )
        .with_row(db.Row("Labels"))
        .with_panel(
            graph(
                "Labels held by source",
                "short",
                Q("streamproc_quality_labels", "{{source}}"),
                Q(
                    "sum by (source)"
                    " (rate(streamproc_quality_final_verdicts_published_total[$__rate_interval]))",
                    "final verdicts/s {{source}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Labeler agreement",
                "percentunit",
                Q('streamproc_quality_labeler_agreement_ratio{category=~"$category"}', "{{category}}"),
                Q("streamproc_quality_labeler_exact_agreement_ratio", "exact"),
            )
        )
        .with_panel(
            graph(
                "Appeals by outcome",
                "reqps",
                Q("sum by (outcome) (rate(streamproc_appeals_total[$__rate_interval]))", "{{outcome}}"),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Age of the figures",
                "s",
                Q("time() - streamproc_quality_figures_updated_timestamp_seconds", "{{instance}}"),
                description="StreamprocQualityFiguresStale fires over 15 minutes.",
            )
        )
    )


# The two vLLM servers, told apart by their scrape job (the compose stack's and the chart's
# ServiceMonitors' names): the generative server (any job but the embedding server's, so a
# server scraped under another name still shows) and the embedding server in pooling mode.
_EMBEDDING_JOB = "vllm-embedding"
_MODEL = f'job!="{_EMBEDDING_JOB}", model_name=~"$model_name"'
_EMBEDDING = f'job="{_EMBEDDING_JOB}", model_name=~"$model_name"'


def _quantile(q: float, metric: str, selector: str = _MODEL) -> str:
    return (
        f"histogram_quantile({q}, sum by (le, model_name) "
        f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))"
    )


def vllm() -> db.Dashboard:
    """vLLM's own metrics: the generative server's requests, KV cache, tokens, latency, prefix
    cache; the embedding server's requests, latency and prompt tokens."""
    return (
        base(
            "streamproc-vllm",
            "streamproc / vLLM",
            "The model servers, from vLLM's own metrics: running and waiting requests, KV cache, "
            "token throughput, time to first token, prefix cache of the generative server; "
            "requests, latency and prompt tokens of the embedding server (pooling).",
            "vllm:num_requests_running",
        )
        .with_variable(label_variable("model_name", "Model", "vllm:num_requests_running"))
        .with_row(db.Row("Generative server: load"))
        .with_panel(
            graph(
                "Requests running and waiting",
                "short",
                Q(f"vllm:num_requests_running{{{_MODEL}}}", "running {{instance}}"),
                Q(f"vllm:num_requests_waiting{{{_MODEL}}}", "waiting {{instance}}"),
                description="Waiting requests have no batch slot; VllmQueueDepthHigh fires over 50. "
                "KEDA scales on their sum (keda.vllm in the chart).",
            )
        )
        .with_panel(
            graph(
                "KV cache usage",
                "percentunit",
                Q(f"vllm:kv_cache_usage_perc{{{_MODEL}}}", "{{instance}}"),
                description="VllmKvCachePressure fires over 90 %.",
            )
        )
        .with_panel(
            graph(
                "Token throughput",
                "short",
                Q(f"streamproc:vllm_prompt_tokens:rate5m{{{_MODEL}}}", "prompt {{model_name}}"),
                Q(f"streamproc:vllm_generation_tokens:rate5m{{{_MODEL}}}", "generated {{model_name}}"),
                description="Tokens per second.",
            )
        )
        .with_panel(
            graph(
                "Requests finished and preempted",
                "reqps",
                Q(
                    "sum by (finished_reason)"
                    f" (rate(vllm:request_success_total{{{_MODEL}}}[$__rate_interval]))",
                    "{{finished_reason}}",
                ),
                Q(
                    f"sum(rate(vllm:num_preemptions_total{{{_MODEL}}}[$__rate_interval]))",
                    "preempted",
                ),
            )
        )
        .with_row(db.Row("Generative server: latency"))
        .with_panel(
            graph(
                "Time to first token",
                "s",
                Q(_quantile(0.5, "vllm:time_to_first_token_seconds"), "p50 {{model_name}}"),
                Q(f"streamproc:vllm_time_to_first_token_seconds:p99_5m{{{_MODEL}}}", "p99 {{model_name}}"),
            )
        )
        .with_panel(
            graph(
                "Request latency and queue time",
                "s",
                Q(_quantile(0.5, "vllm:e2e_request_latency_seconds"), "e2e p50 {{model_name}}"),
                Q(_quantile(0.99, "vllm:e2e_request_latency_seconds"), "e2e p99 {{model_name}}"),
                Q(_quantile(0.99, "vllm:request_queue_time_seconds"), "queue p99 {{model_name}}"),
            )
        )
        .with_panel(
            graph(
                "Prefix-cache hit rate",
                "percentunit",
                Q(f"streamproc:vllm_prefix_cache_hit:ratio_rate5m{{{_MODEL}}}", "{{model_name}}"),
                description="Cached tokens over queried tokens; the packs' policy text is a shared prefix.",
            )
        )
        .with_panel(
            graph(
                "Prompt and generated tokens per request",
                "short",
                Q(_quantile(0.5, "vllm:request_prompt_tokens"), "prompt p50 {{model_name}}"),
                Q(_quantile(0.5, "vllm:request_generation_tokens"), "generated p50 {{model_name}}"),
            )
        )
        .with_row(db.Row("Embedding server (embedding_probe packs)"))
        .with_panel(
            graph(
                "Embedding requests running and waiting",
                "short",
                Q(f"vllm:num_requests_running{{{_EMBEDDING}}}", "running {{instance}}"),
                Q(f"vllm:num_requests_waiting{{{_EMBEDDING}}}", "waiting {{instance}}"),
                description="One request per item of an embedding_probe pack. KEDA scales on the "
                "waiting requests' sum (keda.embedding in the chart).",
            )
        )
        .with_panel(
            graph(
                "Embedding request latency and queue time",
                "s",
                Q(_quantile(0.5, "vllm:e2e_request_latency_seconds", _EMBEDDING), "e2e p50 {{model_name}}"),
                Q(_quantile(0.99, "vllm:e2e_request_latency_seconds", _EMBEDDING), "e2e p99 {{model_name}}"),
                Q(_quantile(0.99, "vllm:request_queue_time_seconds", _EMBEDDING), "queue p99 {{model_name}}"),
                description="From the request's arrival to its pooled vector; the queue part waits "
                "for a batch slot.",
            )
        )
        .with_panel(
            graph(
                "Embedding prompt tokens",
                "short",
                Q(f"streamproc:vllm_prompt_tokens:rate5m{{{_EMBEDDING}}}", "{{model_name}}"),
                description="Tokens per second: each item's text, one prefill through the backbone.",
            )
        )
        .with_panel(
            graph(
                "Embedding requests finished",
                "reqps",
                Q(
                    "sum by (model_name, finished_reason)"
                    f" (rate(vllm:request_success_total{{{_EMBEDDING}}}[$__rate_interval]))",
                    "{{finished_reason}} {{model_name}}",
                ),
            )
        )
    )


DASHBOARDS: dict[str, Callable[[], db.Dashboard]] = {
    "overview": overview,
    "quality": quality,
    "vllm": vllm,
}


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    rendered = {}
    for name, build in DASHBOARDS.items():
        document = json.loads(JSONEncoder().encode(build().build()))
        # Grafana keys panel state by id; the SDK leaves ids to the caller.
        for panel_id, panel in enumerate(document["panels"], start=1):
            panel["id"] = panel_id
        text = json.dumps(document, indent=2, sort_keys=True)
        rendered[f"{name}.json"] = text + "\n"
    return rendered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        sys.stderr.write(f"out of date: {', '.join(stale)}; run `python deploy/grafana/build.py`\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
