"""The load generator's parts: arrival schedule, workload mix, percentiles and reports."""

from __future__ import annotations

import dataclasses
import os
import random
import re
import statistics
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
from click.testing import CliRunner

from load.bench_overhead import _process_counts
from load.bench_scorers import CPU_FORMS, ratios
from load.bench_scorers import main as bench_scorers
from load.fault_scenarios import Figures
from load.hostile_scenarios import POISON, PoisonFigures, hostile_batch, poison_notes
from load.instant import ZeroCostModel, instant_processor
from load.profile_processor import main as profile_processor
from load.reliability import figures_table
from load.report import RunReport, cpu_description, percentile, spread, summarise
from load.stack import (
    ROOT,
    describe_server,
    needs_embedding_server,
    pack_variant,
    running_server,
    sweep_events,
    without_rules,
    write_packs,
)
from load.workload import WorkloadMix, arrival_offsets, make_events, topic_of
from streamproc.config import Settings
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.metrics import PrometheusWorkerMetrics
from streamproc.policy import PolicySet, ScorerName, item_windows, load_policy_set
from streamproc.schemas import Verdict, decode_event
from streamproc.stream import InboundRecord
from tests.factories import worker_processor
from tests.large_records import FIELDS


def test_arrivals_follow_the_target_rate_with_exponential_gaps() -> None:
    offsets = arrival_offsets(20_000, 50.0, random.Random(3))
    gaps = [b - a for a, b in zip([0.0, *offsets], offsets, strict=False)]
    assert abs(statistics.fmean(gaps) - 1 / 50) < 0.001
    # An exponential distribution's standard deviation equals its mean.
    assert abs(statistics.pstdev(gaps) - 1 / 50) < 0.002
    assert offsets == sorted(offsets)


def test_workload_events_are_valid_unique_and_mixed_as_asked() -> None:
    events = make_events(1_000, seed=2, mix=WorkloadMix(video_share=0.25, risky_share=0.1))
    decoded = [decode_event(e.content_type, e.value) for e in events]  # type: ignore[arg-type]
    assert len({e.key for e in events}) == len(events)
    assert 0.2 < sum(e.content_type == "video" for e in events) / len(events) < 0.3
    sizes = [len(orjson.loads(e.value).get("description", "")) for e in events if e.content_type == "listing"]
    assert max(sizes) > 4 * statistics.median(sizes)  # a long tail, not one size
    assert len(decoded) == len(events)


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    random.Random(1).shuffle(values)
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    summary = summarise(values)
    assert (summary.count, summary.p90, summary.max, summary.mean) == (100, 90.0, 100.0, 50.5)


def test_report_writes_json_markdown_and_a_png(tmp_path: Path) -> None:
    latencies = [0.1 * (i % 7 + 1) for i in range(200)]
    report = RunReport(
        name="unit",
        target_rate=10.0,
        duration_seconds=20.0,
        sent=200,
        received=200,
        throughput=9.8,
        latency=summarise(latencies),
        samples=[(i / 10, v) for i, v in enumerate(latencies)],
    )
    json_path, markdown_path, png_path = report.write(tmp_path)
    assert orjson.loads(json_path.read_bytes())["latency"]["p99"] == max(latencies)
    assert "| 10.0/s | 200 | 200 | 9.8/s |" in markdown_path.read_text()
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_runs_throughput_to_the_last_answer() -> None:
    # sends at 0, 1, 2 s; answers after 1, 1, 2 s: the last at 4 s, so 3 answers / 4 s
    report = RunReport.of("x", 1.0, [0.0, 1.0, 2.0], 3, [(0.0, 1.0), (1.0, 1.0), (2.0, 2.0)])
    assert (report.sent, report.received, report.duration_seconds) == (3, 3, 2.0)
    assert report.throughput == 0.75
    assert (report.latency.p50, report.latency.max) == (1.0, 2.0)


def test_the_machine_description_names_the_cpu_and_its_vector_extension() -> None:
    cpuinfo = (
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse2 avx avx2 avx512f\n"
    )
    assert cpu_description(cpuinfo) == "Intel(R) Xeon(R) Processor, AVX-512"
    second = "\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
    assert cpu_description(cpuinfo.replace(" avx512f", "") + second) == "Intel(R) Xeon(R) Processor, AVX2"
    assert cpu_description("") == ""


def test_spread_is_min_median_max() -> None:
    assert spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert spread([4.0, 1.0, 2.0, 3.0]) == {"min": 1.0, "median": 2.5, "max": 4.0}


def test_benchmarks_use_the_running_server_named_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_URL", raising=False)
    assert running_server() is None
    monkeypatch.setenv("VLLM_URL", "http://gpu-1:8000/v1")
    monkeypatch.setenv("MODEL_NAME", "my-model")
    assert running_server() == ("http://gpu-1:8000/v1", "my-model")
    monkeypatch.setenv("MODEL_NAME", "")
    with pytest.raises(click.ClickException, match="MODEL_NAME"):
        running_server()


def test_the_embedding_server_is_named_by_its_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_URL", "http://gpu-1:8000/v1")
    monkeypatch.setenv("MODEL_NAME", "my-model")
    monkeypatch.delenv("EMBEDDING_URL", raising=False)
    assert running_server(pooling=True) is None  # the generative server does not serve embeddings
    monkeypatch.setenv("EMBEDDING_URL", "http://gpu-1:8001/v1")
    monkeypatch.setenv("EMBEDDING_MODEL_NAME", "backbone")
    assert running_server(pooling=True) == ("http://gpu-1:8001/v1", "backbone")
    assert running_server() == ("http://gpu-1:8000/v1", "my-model")
    monkeypatch.delenv("EMBEDDING_MODEL_NAME")
    with pytest.raises(click.ClickException, match="EMBEDDING_MODEL_NAME"):
        running_server(pooling=True)


def test_a_pack_variant_changes_the_scorer_or_drops_the_rules_and_nothing_else() -> None:
    pack = {
        "name": "p",
        "scorer": "embedding_probe",
        "heads": {"file": "h.json"},
        "rules": [1],
        "lists": {"a": []},
    }
    assert pack_variant(pack) == pack
    assert pack_variant(pack, scorer="embedding_probe") == pack  # its heads stay
    assert pack_variant(pack, scorer="channel") == {
        "name": "p",
        "scorer": "channel",
        "rules": [1],
        "lists": {"a": []},
    }
    assert pack_variant(pack, rules=False) == {**pack, "rules": [], "lists": {}}
    assert pack["rules"] == [1]  # the input is left as it was


def test_the_channel_variant_of_the_shipped_packs_asks_the_generative_server(tmp_path: Path) -> None:
    shipped = load_policy_set([ROOT / "policies"])
    channel = load_policy_set([write_packs(tmp_path / "channel", scorer="channel")])
    assert needs_embedding_server(shipped) is True  # the shipped packs: the embedding server
    assert needs_embedding_server(channel) is False
    assert [(p.name, p.scorer, p.probe) for p in channel.policies] == [
        (p.name, "channel", None) for p in shipped.policies
    ]
    # the same packs otherwise: categories, rules, thresholds
    for ours, theirs in zip(channel.policies, shipped.policies, strict=True):
        assert ours.category_ids == theirs.category_ids
        assert ours.rules == theirs.rules
    mixed = PolicySet([shipped.policies[0], channel.policies[1]])
    with pytest.raises(click.ClickException, match="both the generative and the embedding server"):
        needs_embedding_server(mixed)


def test_every_scorer_is_measured_on_the_same_items() -> None:
    def items(level: int) -> list[dict[str, object]]:
        return [{**orjson.loads(e.value), "created_at": None} for e in sweep_events(5, 100, level)]

    assert items(1) == items(1)
    assert items(0) != items(1)  # fresh items at each level


def test_scorer_ratios_divide_the_probe_by_the_channel_baseline() -> None:
    cpu = {form: 100.0 for form in CPU_FORMS}
    results: dict[str, dict[str, Any]] = {
        "embedding_probe": {"worker_cpu_us_per_item": {**cpu, "with its model client": 50.0}},
        "channel": {"worker_cpu_us_per_item": cpu},
    }
    assert ratios(results) == {
        "worker CPU per item, with its model client": 0.5,
        "worker CPU per item, without a model client": 1.0,
    }
    results["embedding_probe"]["direct_items_per_second"] = 3.0
    results["channel"]["direct_items_per_second"] = 0.5
    assert ratios(results)["model server items/s"] == 6.0


def test_bench_scorers_prints_worker_cpu_per_item_beside_channel(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        bench_scorers, ["--cpu-only", "--cpu-events", "100", "--cpu-rounds", "2", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"embedding_probe / channel \(the baseline, measured in the same run\)", result.output)
    written = orjson.loads((tmp_path / "scorers-cpu.json").read_bytes())
    assert set(written["ratio_to_baseline"]) == {f"worker CPU per item, {form}" for form in CPU_FORMS}
    assert all(
        us > 0 for scorer in written["scorers"].values() for us in scorer["worker_cpu_us_per_item"].values()
    )
    assert "load_average_before" in written


def test_an_unreachable_server_is_still_described_by_its_url_and_model() -> None:
    described = describe_server("http://127.0.0.1:9/v1", "m", started_here=None)
    assert described == {
        "url": "http://127.0.0.1:9/v1",
        "model": "m",
        "started": "running already (VLLM_URL)",
    }


def test_overhead_process_counts_default_to_one_and_the_cores() -> None:
    assert _process_counts(None) == sorted({1, os.cpu_count() or 1})
    assert _process_counts("4,1") == [1, 4]
    assert _process_counts("0") == []
    with pytest.raises(click.BadParameter):
        _process_counts("1,x")


@pytest.mark.parametrize("scorer", ["embedding_probe", "channel", "label_logprob"])
async def test_the_instant_model_lets_every_pack_approve_what_it_scores(
    tmp_path: Path, metrics: PrometheusWorkerMetrics, scorer: ScorerName
) -> None:
    """The overhead benchmark's model answers every scorer's requests, and flags nothing: the
    worker's own cost is measured on the path of an approved item."""
    packs = load_policy_set([without_rules(tmp_path / "packs")])  # every item goes to the model
    probe = scorer == "embedding_probe"  # the shipped scorer; the others without its heads
    policies = PolicySet(
        [
            p if probe else dataclasses.replace(p, scorer=scorer, heads=None, probe=None)
            for p in packs.policies
        ]
    )
    model = CountingModel()
    processor = worker_processor(Settings(), policies, model, metrics)
    topics = Settings().topics
    events = make_events(40, seed=3)
    for n, event in enumerate(events):
        topic = topics.listings if event.content_type == "listing" else topics.videos
        outputs = await processor.process(InboundRecord(topic, 0, n, event.key, event.value))
        verdict = Verdict.model_validate_json(outputs[0].value)
        assert (verdict.decision, verdict.decided_by.kind) == ("approve", "none"), verdict
        assert scorer == "label_logprob" or max(verdict.scores.values()) < 0.01  # far from any threshold
    assert model.calls == len(events)  # one request per item, both scorers
    per_item = [len(p.categories) + 1 if scorer == "channel" else 1 for p in policies.policies]
    assert min(per_item) * len(events) <= model.prompts <= max(per_item) * len(events)


class CountingModel(ZeroCostModel):
    def __init__(self) -> None:
        super().__init__()
        self.calls = self.prompts = 0

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        self.calls += 1
        self.prompts += request.prompts
        return await super().complete(request)


async def test_the_instant_server_answers_the_real_client_as_the_instant_model_does() -> None:
    """bench-overhead's HTTP loop: same verdicts through InferenceClient and vLLM's format."""
    settings = Settings()
    direct, _ = instant_processor(settings, ROOT / "policies")
    through_http, metrics = instant_processor(settings, ROOT / "policies", http=True)
    policies = load_policy_set([ROOT / "policies"])
    scored = requests = 0
    for n, event in enumerate(make_events(40, seed=5)):
        record = InboundRecord(topic_of(settings.topics, event), 0, n, event.key, event.value)
        [a, b] = [
            Verdict.model_validate_json((await p.process(record))[0].value) for p in (direct, through_http)
        ]
        assert (a.decision, a.decided_by, a.scores) == (b.decision, b.decided_by, b.scores)
        if b.scores:  # not decided by a pre-model rule: one request per window of the item
            item = decode_event(b.content_type, event.value)
            scored += 1
            requests += len(item_windows(policies.select(item), item).windows)
    assert scored > 30  # every request went through the client
    assert metrics.registry.get_sample_value("streamproc_model_request_latency_seconds_count") == requests


def test_profile_processor_prints_cpu_per_item() -> None:
    result = CliRunner().invoke(profile_processor, ["--events", "100", "--http"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"\d+ µs CPU per item \(100 events, best of 3, http=True\)\n", result.output)


def test_every_hostile_record_sits_between_ordinary_items_and_is_followed_under_its_key() -> None:
    batch = hostile_batch()
    triples = [batch[n : n + 3] for n in range(0, len(batch), 3)]
    assert triples[0][1].value == POISON
    for before, hostile, follower in triples:
        assert before.topic == hostile.topic == follower.topic
        assert (follower.key, follower.follower, before.follower) == (hostile.key, True, False)
        for ordinary in (before, follower):
            decode_event("video" if ordinary.topic == "videos" else "listing", ordinary.value)
    # the poison record and 1 MB in each field (U+FDFA and plain text) become dead letters
    assert sum(p.dead_letter for p in batch) == 1 + 2 * len(FIELDS)
    assert len({p.outcome_id for p in batch}) == len(batch)
    assert len(hostile_batch(("ligature", "plain"))) == len(batch) + 3 * len(FIELDS)  # U+FDFA too


def test_poison_notes_tabulate_each_run_and_say_when_one_went_wrong() -> None:
    good = PoisonFigures(
        "poison",
        at_bound=16,
        dead_letters=17,
        expected_dead_letters=17,
        recovery_seconds=[2.31],
        letter_reasons={"invalid_json": 1, "schema_validation": 16},
        rss_growth_mib=20.4,
        rss_peak_growth_mib=31.0,
        largest_dead_letter_bytes=98_832,
    )
    stalled = dataclasses.replace(good, recovery_seconds=[], not_once=1, partitions_behind=1)
    assert poison_notes([]) == []
    lines = poison_notes([good, stalled])
    assert "| 1 | 17 (17) | 0 | 0 | 2.3 | 31 / 20 | 98832 |" in lines
    assert "| 2 | 17 (17) | 1 | 1 | never | 31 / 20 | 98832 |" in lines
    assert "invalid_json 1, schema_validation 16" in lines[1]
    assert lines[-1].startswith("Reading the poison runs: NOT every record")
    assert "every record over a bound became exactly one dead letter" in poison_notes([good])[-1]


def test_the_reliability_table_says_why_a_sigkill_run_stopped_early() -> None:
    why = "a restarted worker decided nothing within 120 s: kept running without deciding (0 warning lines)"
    silent = Figures(
        "SIGKILL x5, 3000 listings",
        inputs=3000,
        recovery_seconds=[3.5],
        outcome=f"{why}; its log ends:\nINFO x",
    )
    table = figures_table({"sigkill": [Figures("SIGKILL x5, 3000 listings", inputs=3000), silent]}, None, 2)
    assert f"SIGKILL: {why}; its log ends:" in table
    assert "INFO x" not in table  # the log stays in the test's failure, not the table
