"""The local vLLM servers' weight type on this CPU: float32 beside bfloat16 (the model's own,
and vLLM's CPU default), in one run, for both servers: requests/s of the requests the worker
sends, printed as float32 / bfloat16 ratios.

    python -m load.bench_dtype [--items 48] [--generative-items 16] [--concurrency 8]

- **Embedding server**: the shipped packs' embedding_probe requests (vLLM in pooling mode
  serving the truncated backbone).
- **Generative server**: the same items through the packs' ``label_logprob`` variant (one
  short prompt per item; the ``channel`` variant takes tens of seconds an item at bfloat16).

Each server is started here in turn, eager, with the machine to itself, answers a few
warm-up requests, then the measured ones at ``--concurrency`` in flight, and is stopped
before the next. Packs without rules, so that every item reaches the model.
``streamproc.dev.devstack.cpu_dtype`` chooses the type the project's local servers run
from what this measures: float32 unless the CPU has bfloat16 instructions.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from load.direct import closed_loop
from load.report import load_average, machine_description
from load.stack import ROOT, model_requests, vllm_paths, vllm_server, write_packs
from load.workload import make_events
from streamproc.dev.devstack import cpu_dtype, serving
from streamproc.policy import ScorerName, load_policy_set

__all__ = ["DTYPES", "main"]

#: The type measured, then the baseline it is divided by.
DTYPES = ("float32", "bfloat16")
_WARM_UP = 4
#: Each server, and the scorer whose requests it gets (None: the shipped packs' own).
_SERVERS: tuple[tuple[str, ScorerName | None], ...] = (("embedding", None), ("generative", "label_logprob"))


@click.command()
@click.option("--items", type=click.IntRange(min=8), default=48, show_default=True,
              help="Items sent to the embedding server at each type.")  # fmt: skip
@click.option("--generative-items", type=click.IntRange(min=4), default=16, show_default=True,
              help="Items sent to the generative server at each type.")  # fmt: skip
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
              help="Requests in flight.")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "load" / "results", show_default=True)
def main(items: int, generative_items: int, concurrency: int, out: Path) -> None:
    """Print each server's requests/s at float32 and bfloat16 and their ratio; write them as JSON."""
    run_dir = out / "dtype-run"
    load_before = load_average()
    servers: dict[str, dict[str, Any]] = {}
    for role, scorer in _SERVERS:
        count = items if role == "embedding" else generative_items
        servers[role] = _measure(run_dir, role, scorer, count, concurrency)
    result = {
        "benchmark": "vLLM CPU weight type",
        "machine": machine_description(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "chosen_here": cpu_dtype(),
        "concurrency": concurrency,
        "servers": servers,
        "ratio_to_baseline": {role: s["ratio"] for role, s in servers.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "dtype.json").write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"\n{DTYPES[0]} / {DTYPES[1]} (the baseline, measured in the same run), requests/s:")
    for role, measured in servers.items():
        rates = ", ".join(f"{dtype} {measured['requests_per_second'][dtype]:.3g}" for dtype in DTYPES)
        click.echo(f"  {role:10s} {measured['ratio']:6.2f}  ({rates})")
    click.echo(f"the project's local servers run {result['chosen_here']} on this CPU")
    click.echo(
        f"machine: {result['machine']}; load {load_before} before, {result['load_average_after']} after"
    )


def _measure(
    run_dir: Path, role: str, scorer: ScorerName | None, count: int, concurrency: int
) -> dict[str, Any]:
    """Requests/s of one server at each type, on the same requests."""
    pooling = role == "embedding"
    packs = write_packs(run_dir / f"packs-{role}", rules=False, scorer=scorer)
    policies = load_policy_set([packs])
    requests = model_requests(policies, make_events(count, seed=100, run="dtype"))
    warm = model_requests(policies, make_events(_WARM_UP, seed=99, run="warm"))
    rates: dict[str, float] = {}
    for dtype in DTYPES:
        click.echo(f"starting the {role} server at {dtype} …")
        server = vllm_server(run_dir, eager=True, served_model="bench", pooling=pooling, dtype=dtype)
        with serving([server]):  # stopped also when interrupted while it starts
            asyncio.run(closed_loop(server.base_url, "bench", warm, _WARM_UP))
            rates[dtype] = asyncio.run(closed_loop(server.base_url, "bench", requests, concurrency))
        click.echo(f"{role} at {dtype}: {rates[dtype]:.3g} requests/s ({len(requests)} requests)")
    return {
        "model_dir": vllm_paths(pooling).model_dir.name,
        "scorer": scorer or "the shipped packs' (embedding_probe)",
        "requests": len(requests),
        "requests_per_second": rates,
        "ratio": rates[DTYPES[0]] / rates[DTYPES[1]],
    }


if __name__ == "__main__":
    main()
