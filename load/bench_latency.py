"""End-to-end latency at half the saturation rate through a `streamproc worker`, next to a
direct client's at the same offered load, several runs each, interleaved.

    python -m load.bench_latency [--runs 3] [--duration 40] [--saturation-rate R]
    VLLM_URL=http://gpu-1:8000/v1 MODEL_NAME=my-model python -m load.bench_latency

The saturation rate is the direct client's best requests/s, measured first in the same run
(or given), in items/s (divided by the packs' model requests per item; the direct client
sends each item's requests at once, as the worker does, and waits for all of them). Then
Poisson traffic at half that rate is offered in pairs of runs, worker first, then direct
(W D W D …): as Kafka events through one worker process (started once, warmed up), and
straight to the model server. Both runs of a pair follow the same arrival schedule with
fresh items of the same workload, so the ratio of a pair compares like with like, and
interleaving spreads whatever else the machine does over both sides.

Reports each run's p50 and p99, their spread (min / median / max) per side and of the
worker/direct ratios; target: p99 ratio <= 1.5 in every pair. Writes latency.json, and
the markdown report and latency plot of the pair with the highest p99 ratio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
from prometheus_client.parser import text_string_to_metric_families

from load.direct import open_loop_direct
from load.loadgen import open_loop
from load.report import RunReport, load_average, machine_description, spread
from load.stack import (
    ROOT,
    ModelStack,
    best_direct_rate,
    fresh_topics,
    model_server_options,
    model_stack,
    request_groups,
    requests_per_item,
)
from load.workload import Event, make_events
from streamproc.config import TopicSettings

TARGET = 1.5


@click.command()
@click.option(
    "--duration", type=click.FloatRange(min=10), default=40, show_default=True, help="Seconds per run."
)
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True, help="Pairs of runs (W D).")
@click.option("--saturation-rate", type=click.FloatRange(min=0.01), help="Items/s; skip measuring it.")
@click.option("--concurrency", "concurrencies", default="16,32,64,128", show_default=True)
@click.option(
    "--worker-env",
    multiple=True,
    metavar="NAME=VALUE",
    help="A setting for the worker (repeatable), e.g. STREAMPROC_INFERENCE__MIN_INFLIGHT=64.",
)
@click.option(
    "--candidate-env",
    multiple=True,
    metavar="NAME=VALUE",
    help="Settings of a second worker run in each pair too (W C D), to compare a change.",
)
@model_server_options
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "load" / "results", show_default=True)
def main(
    duration: float,
    runs: int,
    saturation_rate: float | None,
    concurrencies: str,
    worker_env: tuple[str, ...],
    candidate_env: tuple[str, ...],
    eager: bool,
    niceness: int,
    out: Path,
) -> None:
    """Print both sides' p50 and p99 per run, their spread and ratios, and write them as JSON."""
    env = dict(_setting(item) for item in worker_env)
    candidate = dict(_setting(item) for item in candidate_env) or None
    load_before = load_average()
    with model_stack(out / "latency-run", eager=eager, niceness=niceness) as stack:
        per_item = requests_per_item(stack.policies, make_events(200, seed=300, run="direct0"))
        if saturation_rate is None:
            levels = [int(c) for c in concurrencies.split(",")]
            # About 200 requests per concurrency level, whatever the scorer sends per item.
            _, requests_rate, _ = best_direct_rate(stack, levels, max(20, int(200 / per_item)), seed=300)
            saturation_rate = requests_rate / per_item  # items/s: the worker is offered items
            click.echo(f"{per_item:.2f} model requests per item: saturation {saturation_rate:.2f} items/s")
        rate = saturation_rate / 2
        count = max(10, int(rate * duration))
        click.echo(f"offering {rate:.2f}/s for {duration:.0f} s ({count} items) per run, {runs} pairs")
        pairs, candidates = _interleaved(stack, rate, count, runs, env, candidate)
        server = stack.server
    result = _summary(pairs, server, saturation_rate, rate, duration, env, load_before)
    result["model_requests_per_item"] = per_item
    if candidate is not None:
        ratios = [c.latency.p99 / d.latency.p99 for c, (_, d) in zip(candidates, pairs, strict=True)]
        result["candidate"] = {
            "worker_settings": candidate,
            "runs": [json.loads(c.to_json()) for c in candidates],
            "p99_ratio": spread(ratios),
            "p99_ratio_to_the_worker": spread(
                [c.latency.p99 / w.latency.p99 for c, (w, _) in zip(candidates, pairs, strict=True)]
            ),
        }
        click.echo(f"candidate {candidate}: p99 ratio to direct {spread(ratios)}")
    worst = max(range(runs), key=lambda i: pairs[i][0].latency.p99 / pairs[i][1].latency.p99)
    pairs[worst][0].write(out / "latency-worker")
    pairs[worst][1].write(out / "latency-direct")
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps(result, indent=2) + "\n")
    _print(result)


def _setting(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name.startswith("STREAMPROC_"):
        raise click.BadParameter(f"expected STREAMPROC_NAME=VALUE, got {item!r}", param_hint="--worker-env")
    return name, value


def _interleaved(
    stack: ModelStack,
    rate: float,
    count: int,
    runs: int,
    env: dict[str, str],
    candidate: dict[str, str] | None = None,
) -> tuple[list[tuple[RunReport, RunReport]], list[RunReport]]:
    """(worker, direct) reports of each pair, and with ``candidate`` settings a second worker's
    report in each pair too (W C D: the candidate meets the same minute of the machine)."""
    workers = [(fresh_topics(stack.bootstrap), env)]
    if candidate is not None:
        workers.append((fresh_topics(stack.bootstrap), {**env, **candidate}))
    started = []
    pairs: list[tuple[RunReport, RunReport]] = []
    candidates: list[RunReport] = []
    try:
        for topics, settings in workers:
            started.append(stack.start_worker(topics, **settings))
            asyncio.run(open_loop(stack.bootstrap, topics, make_events(16, seed=5, run="warm"), 100.0))
        for n in range(runs):
            events = make_events(count, seed=500 + n, run=f"worker{n}")
            through = _worker_run(stack, workers[0][0], started[0][1], events, rate, n, "the worker")
            if candidate is not None:
                events = make_events(count, seed=600 + n, run=f"candidate{n}")
                candidates.append(
                    _worker_run(stack, workers[1][0], started[1][1], events, rate, n, "candidate")
                )
            requests = request_groups(stack.policies, make_events(count, seed=400 + n, run=f"direct{n}"))
            name = f"direct to the model server, run {n + 1}"
            direct = asyncio.run(
                open_loop_direct(stack.base_url, stack.model, requests, rate, seed=n + 1, name=name)
            )
            if through.received < count:
                raise click.ClickException(
                    f"only {through.received} of {count} verdicts; see {stack.run_dir}"
                )
            click.echo(
                f"run {n + 1}: p50/p99 worker {through.latency.p50:.3f}/{through.latency.p99:.3f} s, "
                f"direct {direct.latency.p50:.3f}/{direct.latency.p99:.3f} s, "
                f"p99 ratio {through.latency.p99 / direct.latency.p99:.2f}; worker p50/p99 by stage: "
                + ", ".join(f"{k} {v.p50:.3f}/{v.p99:.3f}" for k, v in through.stages.items())
                + "; gate: at its limit in {share_at_limit:.1%} of samples, most in flight "
                "{most_in_flight:.0f}, lowest limit {lowest_limit:.0f}".format(**through.gate)
            )
            pairs.append((through, direct))
            if candidate is not None:
                tried = candidates[-1]
                click.echo(
                    f"run {n + 1}: candidate p50/p99 {tried.latency.p50:.3f}/{tried.latency.p99:.3f} s, "
                    f"p99 ratio {tried.latency.p99 / direct.latency.p99:.2f}; gate at its limit in "
                    f"{tried.gate['share_at_limit']:.1%} of samples"
                )
    finally:
        for process, _ in started:
            process.stop()
    return pairs, candidates


def _worker_run(
    stack: ModelStack, topics: TopicSettings, port: int, events: list[Event], rate: float, n: int, who: str
) -> RunReport:
    name = f"through Kafka and {who}, run {n + 1}"
    with _gate_watch(port) as gate:
        report = asyncio.run(open_loop(stack.bootstrap, topics, events, rate, seed=n + 1, name=name))
    report.gate = gate
    return report


@contextlib.contextmanager
def _gate_watch(port: int, interval: float = 0.05) -> Iterator[dict[str, float]]:
    """Whether the worker's adaptive limit held requests back during a run: its limit and
    requests in flight, sampled from /metrics every ``interval`` seconds."""
    figures: dict[str, float] = {}
    stop = threading.Event()

    def sample() -> None:
        at_limit = samples = 0
        most, lowest = 0.0, float("inf")
        while not stop.wait(interval):
            with contextlib.suppress(httpx.HTTPError):
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
                in_flight = values["streamproc_model_prompts_in_flight"]
                limit = values["streamproc_model_concurrency_limit"]
                samples += 1
                at_limit += in_flight >= limit
                most, lowest = max(most, in_flight), min(lowest, limit)
        figures.update(
            samples=samples,
            share_at_limit=at_limit / max(1, samples),
            most_in_flight=most,
            lowest_limit=lowest,
        )

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield figures
    finally:
        stop.set()
        thread.join()


def _summary(
    pairs: list[tuple[RunReport, RunReport]],
    server: dict[str, object],
    saturation_rate: float,
    rate: float,
    duration: float,
    env: dict[str, str],
    load_before: str,
) -> dict[str, object]:
    runs = [
        {
            "worker": json.loads(worker.to_json()),
            "direct": json.loads(direct.to_json()),
            "p50_ratio": worker.latency.p50 / direct.latency.p50,
            "p99_ratio": worker.latency.p99 / direct.latency.p99,
        }
        for worker, direct in pairs
    ]
    p99_ratios = [float(r["p99_ratio"]) for r in runs]
    return {
        "benchmark": "latency at half the saturation rate, worker and direct runs interleaved",
        "machine": machine_description(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "model_server": server,
        "worker_settings": env,
        "saturation_rate": saturation_rate,
        "offered_rate": rate,
        "duration_seconds_per_run": duration,
        "runs": runs,
        "spread": {
            "worker_p50": spread([w.latency.p50 for w, _ in pairs]),
            "worker_p99": spread([w.latency.p99 for w, _ in pairs]),
            "direct_p50": spread([d.latency.p50 for _, d in pairs]),
            "direct_p99": spread([d.latency.p99 for _, d in pairs]),
            "p50_ratio": spread([float(r["p50_ratio"]) for r in runs]),
            "p99_ratio": spread(p99_ratios),
        },
        "target_p99_ratio": TARGET,
        "target_met_in_every_run": max(p99_ratios) <= TARGET,
    }


def _print(result: dict[str, object]) -> None:
    rows = result["spread"]
    assert isinstance(rows, dict)  # noqa: S101 - built above
    click.echo("\n| figure | min | median | max |\n|---|---|---|---|")
    for name, figures in rows.items():
        unit = "" if "ratio" in name else " s"
        cells = " | ".join(f"{figures[k]:.3f}{unit}" for k in ("min", "median", "max"))
        click.echo(f"| {name} | {cells} |")
    server = result["model_server"]
    assert isinstance(server, dict)  # noqa: S101
    click.echo(
        f"\nmachine: {result['machine']}; load {result['load_average_before']} before, "
        f"{result['load_average_after']} after; model server {server.get('url')} ({server.get('model')}, "
        f"{server.get('started')})"
    )
    met = "met" if result["target_met_in_every_run"] else "NOT met"
    click.echo(f"target p99 ratio <= {TARGET} in every run: {met}")


if __name__ == "__main__":
    main()
