"""Model saturation: verdicts/s through Kafka and a `streamproc worker` process, divided by
requests/s of a direct client sending the same kind of requests to the same vLLM server at
its best concurrency.

    python -m load.bench_saturation [--events 300] [--eager]
    VLLM_URL=http://gpu-1:8000/v1 MODEL_NAME=my-model python -m load.bench_saturation

One broker and one model server (started here, or the running one ``VLLM_URL`` names)
serve both measurements, one after the other. Every
measurement uses fresh items from the same workload (so vLLM's prefix cache helps each
only with the shared policy text), and packs without rules (so every item reaches the
model). Target: ratio >= 0.95.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from load.direct import closed_loop
from load.loadgen import open_loop
from load.report import load_average, machine_description
from load.stack import (
    ROOT,
    ModelStack,
    best_direct_rate,
    fresh_topics,
    model_requests,
    model_server_options,
    model_stack,
)
from load.workload import make_events

TARGET = 0.95
#: Events are offered far faster than any model serves them: the worker always has a backlog.
_BURST_RATE = 10_000.0


@click.command()
@click.option("--events", "count", type=click.IntRange(min=50), default=300, show_default=True)
@click.option("--concurrency", "concurrencies", default="16,32,64,128", show_default=True)
@model_server_options
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "load" / "results", show_default=True)
def main(count: int, concurrencies: str, eager: bool, niceness: int, out: Path) -> None:
    """Print the model-saturation ratio (target >= 0.95) and write it as JSON."""
    levels = [int(c) for c in concurrencies.split(",")]
    load_before = load_average()
    with model_stack(out / "saturation-run", eager=eager, niceness=niceness) as stack:
        best, first_rate, rates = best_direct_rate(stack, levels, count, seed=100)
        adaptive = _through_worker(stack, count, seed=200)
        again = model_requests(stack.policies, make_events(count, seed=400, run="again"))
        # The worker's limit counts prompts; the direct client's concurrency, requests.
        fixed_prompts = round(best * sum(r.prompts for r in again) / len(again))
        fixed = _through_worker(
            stack,
            count,
            seed=300,
            STREAMPROC_INFERENCE__ADAPTIVE_CONCURRENCY="false",
            STREAMPROC_INFERENCE__MAX_INFLIGHT=str(fixed_prompts),
            STREAMPROC_INFERENCE__MIN_INFLIGHT=str(fixed_prompts),  # not above the maximum
        )
        # The best of a noisy sweep is biased upwards: measure it once more and average.
        second_rate = asyncio.run(closed_loop(stack.base_url, stack.model, again, best))
        server = stack.server
    # The worker is measured in items (verdicts), the direct client in requests.
    per_item = len(again) / count
    direct_rate = (first_rate + second_rate) / 2 / per_item
    ratio, fixed_ratio = adaptive / direct_rate, fixed / direct_rate
    result = {
        "benchmark": "model saturation",
        "machine": machine_description(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "model_server": server,
        "events_per_measurement": count,
        "direct_requests_per_second_by_concurrency": rates,
        "direct_best_concurrency": best,
        "worker_fixed_max_inflight_prompts": fixed_prompts,
        "direct_best_requests_per_second_again": second_rate,
        "model_requests_per_item": per_item,
        "direct_baseline_items_per_second": direct_rate,
        "worker_verdicts_per_second_adaptive": adaptive,
        "worker_verdicts_per_second_fixed_at_best_concurrency": fixed,
        "ratio": ratio,
        "ratio_fixed_concurrency": fixed_ratio,
        "target": TARGET,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "saturation.json").write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"\ndirect client at concurrency {best}: {first_rate:.2f} and {second_rate:.2f} req/s")
    click.echo(f"worker, adaptive concurrency:      {adaptive:.2f} verdicts/s  ratio {ratio:.3f}")
    click.echo(
        f"worker, fixed at {fixed_prompts:4d} prompts in flight:  {fixed:.2f} verdicts/s  "
        f"ratio {fixed_ratio:.3f}"
    )
    click.echo(f"model saturation ratio: {ratio:.3f}  (target >= {TARGET})")
    click.echo(
        f"machine: {result['machine']}; load {load_before} before, {result['load_average_after']} after; "
        f"model server {server.get('url')} ({server.get('model')}, {server.get('started')})"
    )


def _through_worker(stack: ModelStack, count: int, *, seed: int, **env: str) -> float:
    """Verdicts/s of a fresh worker process given a backlog of ``count`` events."""
    topics = fresh_topics(stack.bootstrap)
    worker, _ = stack.start_worker(topics, **env)
    try:
        warm = make_events(32, seed=seed + 1, run=f"warm{seed}")
        asyncio.run(open_loop(stack.bootstrap, topics, warm, _BURST_RATE, name="warm-up"))
        events = make_events(count, seed=seed, run=f"worker{seed}")
        burst = open_loop(stack.bootstrap, topics, events, _BURST_RATE, name="worker", settle_seconds=600)
        report = asyncio.run(burst)
    finally:
        worker.stop()
    if report.received < count:
        raise click.ClickException(f"only {report.received} of {count} verdicts arrived; see {stack.run_dir}")
    click.echo(f"worker {env or '(defaults)'}: {report.throughput:.2f} verdicts/s")
    return report.throughput


if __name__ == "__main__":
    main()
