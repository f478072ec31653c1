"""Cost of the shipped packs' scorer (``embedding_probe``) beside the ``channel`` scorer it
replaced, in one run, on the same workload items: items/s of the model server and worker
CPU per item, each printed as a probe/channel ratio.

    python -m load.bench_scorers [--items 48] [--channel-items 8] [--cpu-events 1500] [--cpu-only]
    EMBEDDING_URL=http://gpu-1:8001/v1 EMBEDDING_MODEL_NAME=backbone \\
        VLLM_URL=http://gpu-1:8000/v1 MODEL_NAME=my-model python -m load.bench_scorers

The baseline is the packs' ``channel`` variant: the same packs with ``scorer: channel`` and
without the heads (they carry their channel texts), so only the scorer differs.

- **Model throughput**: items/s a plain HTTP client reaches at its best concurrency,
  sending the requests the worker would send (built by the same scorer code, packs without
  rules so that every item reaches the model) to the server the packs ask: the embedding
  server (vLLM in pooling mode serving the truncated backbone) for ``embedding_probe``, the
  generative server for ``channel``. Both get the same workload items at each concurrency
  level; ``channel`` only the first ``--channel-items`` of them, since on a 2-core CPU one
  item's 7-8 echoed prompts take about 17 s. Each server is started here in turn (eager by
  default, as `streamproc demo` and `eval` start them on CPU), with the machine to itself,
  and stopped before the next; or the running ones that the variables above name are
  measured. Nothing else runs meanwhile, so unlike the saturation benchmark nothing is
  niced: a niceness set for the first server would be inherited by the second, and it
  cannot be lowered again without privileges. With the defaults the run takes about
  7 minutes on a 2-core CPU, most of it the channel server.
- **Worker CPU per item**: process CPU time of the worker's ``Processor.process`` (decode,
  rules, prompt or input building, scores, thresholds, verdict, metrics), the packs with
  their rules as shipped, the model answering at once (load/instant.py): through the
  worker's own model client to an in-process server answering in vLLM's wire format (what
  a worker pays per item besides Kafka; the server's own work counts too), and with the
  zero-cost model in place of the client. Measured first, while no model server runs;
  every scorer and form once per round, the lowest of the rounds.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from load.direct import closed_loop
from load.instant import instant_processor
from load.profile_processor import cpu_seconds_per_item, inbound_records
from load.report import load_average, machine_description
from load.stack import (
    ROOT,
    ModelStack,
    best_direct_rate,
    eager_option,
    model_requests,
    model_stack,
    sweep_events,
    write_packs,
)
from load.workload import Event, make_events
from streamproc.config import Settings
from streamproc.policy import ScorerName

__all__ = ["CPU_FORMS", "SCORERS", "main", "ratios"]

#: The scorer measured, then the baseline it is divided by.
SCORERS: tuple[ScorerName, ScorerName] = ("embedding_probe", "channel")
#: How the worker's model is reached in the CPU measurement: its own HTTP client to an
#: instant vLLM-format server, or the zero-cost model in place of the client.
CPU_FORMS = {"with its model client": True, "without a model client": False}
_SEED = 100


@click.command()
@click.option(
    "--items",
    type=click.IntRange(min=4),
    default=48,
    show_default=True,
    help="Items per concurrency level against the embedding server.",
)
@click.option(
    "--channel-items",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Items per concurrency level against the generative server: the first of the same items "
    "(about 17 s each on a 2-core CPU).",
)
@click.option(
    "--probe-concurrency",
    default="4,16",
    show_default=True,
    help="Requests in flight tried against the embedding server.",
)
@click.option(
    "--channel-concurrency",
    default="4",
    show_default=True,
    help="Requests in flight tried against the generative server (one per item, 7-8 prompts each).",
)
@click.option(
    "--cpu-events",
    type=click.IntRange(min=100),
    default=1500,
    show_default=True,
    help="Items for the worker-CPU measurement.",
)
@click.option(
    "--cpu-rounds",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Rounds of the worker-CPU measurement (the lowest counts).",
)
@click.option("--cpu-only", is_flag=True, help="Measure worker CPU per item only (no model server).")
@functools.partial(eager_option, eager=True)
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "load" / "results", show_default=True)
def main(
    items: int,
    channel_items: int,
    probe_concurrency: str,
    channel_concurrency: str,
    cpu_events: int,
    cpu_rounds: int,
    cpu_only: bool,
    eager: bool,
    out: Path,
) -> None:
    """Print items/s of the model server and worker CPU per item, probe beside channel, and
    write them as JSON."""
    if channel_items > items:
        raise click.BadParameter(
            "at most --items (they are the first of the same items)", param_hint="--channel-items"
        )
    sweeps = {
        "embedding_probe": (_levels(probe_concurrency), items),
        "channel": (_levels(channel_concurrency), channel_items),
    }
    run_dir = out / "scorers-run"
    load_before = load_average()
    packs = {scorer: write_packs(run_dir / f"packs-{scorer}", scorer=scorer) for scorer in SCORERS}
    results: dict[str, dict[str, Any]] = {scorer: {} for scorer in SCORERS}
    cpu = _worker_cpu(packs, make_events(cpu_events, seed=7, run="scorers"), cpu_rounds)
    for scorer in SCORERS:
        results[scorer]["worker_cpu_us_per_item"] = cpu[scorer]
        said = ", ".join(f"{us:.0f} µs CPU per item {form}" for form, us in cpu[scorer].items())
        click.echo(f"{scorer}: {said}")
    if not cpu_only:
        for scorer in SCORERS:
            levels, count = sweeps[scorer]
            results[scorer].update(_model_throughput(run_dir / scorer, scorer, levels, count, eager))
    figures = ratios(results)
    result = {
        "benchmark": "scorer cost",
        "machine": machine_description(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "scorer": SCORERS[0],
        "baseline": SCORERS[1],
        "worker_cpu_events": cpu_events,
        "worker_cpu_rounds": cpu_rounds,
        "scorers": results,
        "ratio_to_baseline": figures,
    }
    out.mkdir(parents=True, exist_ok=True)
    name = "scorers-cpu.json" if cpu_only else "scorers.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    click.echo("")
    for scorer in SCORERS:
        measured = results[scorer]
        rate = measured.get("direct_items_per_second")
        served = f"{rate:6.3g} items/s at {measured['direct_best_concurrency']} in flight, " if rate else ""
        us = measured["worker_cpu_us_per_item"]
        click.echo(
            f"{scorer:16s} {served}worker {us['with its model client']:4.0f} µs CPU per item "
            f"({us['without a model client']:.0f} without its model client)"
        )
    click.echo(f"\n{SCORERS[0]} / {SCORERS[1]} (the baseline, measured in the same run):")
    for what, ratio in figures.items():
        click.echo(f"  {what:45s} {ratio:7.3f}")
    click.echo(
        f"machine: {result['machine']}; load {load_before} before, {result['load_average_after']} after"
    )


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Each figure of the first scorer divided by the baseline's (the second), where both have it."""
    scorer, baseline = (results[name] for name in SCORERS)
    figures: dict[str, float] = {}
    for form in CPU_FORMS:
        figures[f"worker CPU per item, {form}"] = (
            scorer["worker_cpu_us_per_item"][form] / baseline["worker_cpu_us_per_item"][form]
        )
    if "direct_items_per_second" in scorer and "direct_items_per_second" in baseline:
        figures["model server items/s"] = (
            scorer["direct_items_per_second"] / baseline["direct_items_per_second"]
        )
    return figures


def _levels(option: str) -> list[int]:
    try:
        levels = [int(part) for part in option.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected concurrencies like 4,16, got {option!r}") from None
    if not levels or min(levels) < 1:
        raise click.BadParameter(f"expected concurrencies of at least 1, got {option!r}")
    return levels


def _worker_cpu(
    packs: dict[ScorerName, Path], events: Sequence[Event], rounds: int
) -> dict[str, dict[str, float]]:
    """µs of CPU per item of the worker's processor, per scorer and form of the instant model:
    the lowest of ``rounds`` rounds, each measuring every scorer and form once in turn, so
    that a busier minute of the machine falls on all of them alike."""
    settings = Settings()
    records = inbound_records(settings, events)
    processors = {
        (scorer, form): instant_processor(settings, packs[scorer], http=http)[0]
        for scorer in SCORERS
        for form, http in CPU_FORMS.items()
    }
    best = dict.fromkeys(processors, float("inf"))
    for round_ in range(rounds):
        for key, processor in processors.items():
            seconds = cpu_seconds_per_item(processor, records, passes=1, warm=round_ == 0)
            best[key] = min(best[key], seconds)
    return {scorer: {form: 1e6 * best[scorer, form] for form in CPU_FORMS} for scorer in SCORERS}


def _model_throughput(
    run_dir: Path, scorer: ScorerName, levels: Sequence[int], items: int, eager: bool
) -> dict[str, Any]:
    """The direct client's items/s at each concurrency against the server ``scorer`` asks."""
    with model_stack(run_dir, eager=eager, niceness=0, scorer=scorer) as stack:
        # A fresh server's first answer is slower: not to be counted at the first level.
        warm = model_requests(stack.policies, make_events(1, seed=_SEED - 1, run="warm"))
        asyncio.run(closed_loop(stack.base_url, stack.model, warm, 1))
        tokens: list[int] = []
        best, rate, rates = best_direct_rate(stack, levels, items, seed=_SEED, prompt_tokens=tokens)
        per_item, prompts = _requests_per_item(stack, len(levels), items)
        server = stack.server
    items_per_second, tokens_per_item = rate / per_item, sum(tokens) / (items * len(levels))
    click.echo(
        f"{scorer}: {items_per_second:.3g} items/s at {best} requests in flight "
        f"({tokens_per_item:.0f} prompt tokens per item: {items_per_second * tokens_per_item:.0f} tokens/s)"
    )
    return {
        "model_server": server,
        "model_requests_per_item": per_item,
        "model_prompts_per_item": prompts,
        "model_prompt_tokens_per_item": tokens_per_item,
        "direct_items_per_level": items,
        "direct_requests_per_second_by_concurrency": rates,
        "direct_best_concurrency": best,
        "direct_items_per_second": items_per_second,
        "direct_prompt_tokens_per_second": items_per_second * tokens_per_item,
    }


def _requests_per_item(stack: ModelStack, levels: int, items: int) -> tuple[float, float]:
    """Mean requests and prompts per item over the items best_direct_rate sent."""
    events = [e for n in range(levels) for e in sweep_events(items, _SEED, n)]
    requests = model_requests(stack.policies, events)
    return len(requests) / len(events), sum(r.prompts for r in requests) / len(events)


if __name__ == "__main__":
    main()
