"""`make reliability`: the fault scenarios several times each, then a soak, tabulated in
docs/reliability.md (between its figures markers) and written to load/results/reliability.json.

    python -m load.reliability [--runs 3] [--soak-minutes 5] [--soak-rate 40]

Needs STREAMPROC_VLLM_PYTHON and STREAMPROC_MODEL_DIR (the Makefile target sets them). Starts
its own broker and vLLM server; nothing else may be using the machine's CPUs meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import statistics
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click

from load.fault_scenarios import (
    FAST_WORKER_ENV,
    Collector,
    Figures,
    broker_restart,
    create_topics,
    listing,
    listing_records,
    model_faults,
    publish,
    repeated_sigkill,
    topic_env,
)
from load.faults import fault_proxy
from load.hostile_scenarios import poison_notes, poison_records, rss_mib
from load.stack import SERVED_MODEL, start_vllm
from streamproc.config import TopicSettings
from streamproc.dev.devstack import Broker, ManagedProcess, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
RESULTS = ROOT / "load" / "results" / "reliability.json"
RUN_DIR = ROOT / "load" / "results" / "reliability-run"  # ignored by git
BEGIN, END = "<!-- figures: begin -->", "<!-- figures: end -->"


@dataclass
class RunningWorker:
    process: ManagedProcess
    metrics_port: int


@dataclass
class Stack:
    run_dir: Path
    broker: Broker
    base_url: str
    started: list[RunningWorker] = field(default_factory=list)

    def start_worker(self, **env: str) -> RunningWorker:
        """A `streamproc worker` on the stack; ``env`` overrides the defaults (as in the tests)."""
        port = free_port()
        settings_env = {
            "STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "STREAMPROC_KAFKA__GROUP_ID": f"reliability-{uuid.uuid4().hex[:8]}",
            "STREAMPROC_INFERENCE__BASE_URL": self.base_url,
            "STREAMPROC_INFERENCE__MODEL": SERVED_MODEL,
            "STREAMPROC_METRICS__HOST": "127.0.0.1",
            "STREAMPROC_METRICS__PORT": str(port),
            "STREAMPROC_POLICY__PATHS": json.dumps([str(ROOT / "policies")]),
            **env,
        }
        log = self.run_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
        process = ManagedProcess(
            "worker", [sys.executable, "-m", "streamproc", "worker"], log, env=settings_env
        )
        process.start()
        if not wait_for_port("127.0.0.1", port, timeout=60):
            process.stop()
            raise click.ClickException(f"worker did not start:\n{process.log_tail()}")
        self.started.append(RunningWorker(process, port))
        return self.started[-1]

    def stop_workers(self) -> None:
        for worker in self.started:
            worker.process.stop()
        self.started.clear()


@contextmanager
def stack(run_dir: Path) -> Iterator[Stack]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with Broker(run_dir / "broker.log") as broker:
        click.echo("starting vLLM (eager; a minute or two on CPU) …")
        server = start_vllm(run_dir, eager=True)
        try:
            yield Stack(run_dir, broker, server.base_url)
        finally:
            server.stop()


def run_scenarios(running: Stack, runs: int) -> dict[str, list[Figures]]:
    scenarios: dict[str, Callable[[], Figures]] = {
        "sigkill": lambda: repeated_sigkill(running.broker.bootstrap, _topics(running), running.start_worker),
        "model": lambda: _model_faults(running),
        "broker": lambda: broker_restart(running.start_worker, running.run_dir),
        "poison": lambda: poison_records(running.broker.bootstrap, _topics(running), running.start_worker),
    }
    results: dict[str, list[Figures]] = defaultdict(list)
    for n in range(runs):
        for name, scenario in scenarios.items():
            try:
                figures = scenario()
            finally:
                running.stop_workers()
            click.echo(f"run {n + 1}/{runs} {name}: {figures}")
            results[name].append(figures)
    return results


def _topics(running: Stack) -> TopicSettings:
    return create_topics(running.broker.bootstrap)


def _model_faults(running: Stack) -> Figures:
    with fault_proxy(running.base_url) as proxy:
        return model_faults(running.broker.bootstrap, _topics(running), running.start_worker, proxy)


@dataclass
class Soak:
    minutes: float
    rate: float
    model_every: int
    inputs: int = 0
    without_verdict: int = 0
    per_minute: list[dict[str, float]] = field(default_factory=list)  # minute, verdicts, p50, p99, rss_mib


def soak(running: Stack, minutes: float, rate: float, model_every: int = 20) -> Soak:
    """``rate`` listings/s for ``minutes`` (one in ``model_every`` to the model, the rest decided
    by a pre-rule) through one worker: its RSS and the end-to-end latency, minute by minute."""
    topics = _topics(running)
    worker = running.start_worker(**FAST_WORKER_ENV, **topic_env(topics))
    pid = worker.process.process.pid if worker.process.process else 0
    result = Soak(minutes, rate, model_every)
    rss: dict[int, float] = {}
    began = time.monotonic()
    with Collector(running.broker.bootstrap, topics) as collector:
        n = 0
        while (elapsed := time.monotonic() - began) < minutes * 60:
            batch = [listing(f"L-s{n + i}", banned=(n + i) % model_every != 0) for i in range(int(rate))]
            n += len(batch)
            asyncio.run(publish(running.broker.bootstrap, topics.listings, listing_records(batch)))
            rss[int(elapsed // 60)] = max(rss.get(int(elapsed // 60), 0.0), rss_mib(pid))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - began - elapsed)))
        expected = {f"L-s{i}" for i in range(n)}
        collector.wait_for_ids(expected, 120)
        verdicts = list(collector.verdicts)
    running.stop_workers()
    result.inputs = n
    result.without_verdict = len(expected - {v.content_id for v in verdicts})
    start = datetime.fromtimestamp(time.time() - (time.monotonic() - began), UTC)
    by_minute: dict[int, list[float]] = defaultdict(list)
    for v in verdicts:
        by_minute[int((v.produced_at - start).total_seconds() // 60)].append(v.latency.end_to_end_seconds)
    for minute in sorted(m for m in by_minute if m < minutes):
        values = sorted(by_minute[minute])
        result.per_minute.append(
            {
                "minute": minute + 1,
                "verdicts": len(values),
                "p50": values[len(values) // 2],
                "p99": values[min(len(values) - 1, int(len(values) * 0.99))],
                "rss_mib": rss.get(minute, 0.0),
            }
        )
    return result


def machine() -> str:
    memory = "?"
    with open("/proc/meminfo") as meminfo:
        if match := re.search(r"MemTotal:\s+(\d+) kB", meminfo.read()):
            memory = f"{int(match.group(1)) / 1024**2:.0f} GiB"
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {memory} RAM, no GPU, {platform.system()}, "
        f"Python {platform.python_version()}; Tansu broker (memory storage) and vLLM (CPU, "
        f"--enforce-eager, SmolLM2-135M-Instruct) on the same machine"
    )


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "-"


def figures_table(results: dict[str, list[Figures]], soaked: Soak | None, runs: int) -> str:
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d} by `make reliability` ({runs} runs per scenario) on: "
        f"{machine()}.",
        "",
        "| scenario | runs | inputs per run | without a verdict (max) | duplicates (max) / bound "
        "| approvals produced by errors | recovery s (median / max) | wall s (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for runs_of in results.values():
        recovery = [s for f in runs_of for s in f.recovery_seconds]
        bound = runs_of[0].duplicate_bound
        lines.append(
            f"| {runs_of[0].scenario} | {len(runs_of)} | {runs_of[0].inputs} "
            f"| {max(f.without_verdict for f in runs_of)} "
            f"| {max(f.duplicates for f in runs_of)} / {bound if bound else '-'} "
            f"| {sum(f.error_approvals for f in runs_of)} "
            f"| {_median(recovery)} / {max(recovery, default=0):.1f} "
            f"| {_median([f.wall_seconds for f in runs_of])} |"
        )
    lines += ["", *_fault_notes(results), *poison_notes(results.get("poison", []))]
    if soaked is not None:
        lines += _soak_table(soaked)
    return "\n".join(lines)


def _fault_notes(results: dict[str, list[Figures]]) -> list[str]:
    decisions: dict[str, int] = defaultdict(int)
    for f in results.get("model", []):
        for key, count in f.fault_decisions.items():
            decisions[key] += count
    runs = len(results.get("model", [])) or 1
    during = ", ".join(f"{key} {count / runs:g}" for key, count in sorted(decisions.items()))
    notes = [
        f"Verdicts produced during each model server fault, per run (4 new listings per fault; "
        f"the others were held until it ended): {during or 'none'}.",
    ]
    notes += [f"SIGKILL: {f.outcome.splitlines()[0]}" for f in results.get("sigkill", []) if f.outcome]
    outcomes: dict[str, list[str]] = defaultdict(list)
    for f in results.get("broker", []):
        summary, _, detail = f.outcome.partition(" (")
        outcomes[summary].append(detail.rstrip(")"))
    for summary, details in outcomes.items():
        notes.append(
            f"Broker restart, {len(details)} of {len(results['broker'])} runs: {summary} ({details[0]})."
        )
    return notes


def _soak_table(soaked: Soak) -> list[str]:
    lines = [
        "",
        f"Soak: {soaked.rate:.0f} listings/s for {soaked.minutes:g} minutes through one worker (one in "
        f"{soaked.model_every} scored by the model, the rest decided by a pre-rule); "
        f"{soaked.inputs} inputs, {soaked.without_verdict} without a verdict.",
        "",
        "| minute | verdicts | end-to-end p50 s | end-to-end p99 s | worker RSS MiB (max) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {m['minute']:.0f} | {m['verdicts']:.0f} | {m['p50']:.3f} | {m['p99']:.3f} | {m['rss_mib']:.0f} |"
        for m in soaked.per_minute
    ]
    return lines


def write_doc(table: str, doc: Path = DOC) -> None:
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise click.ClickException(f"{doc} has no {BEGIN} … {END} markers to write the figures between")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


@click.command()
@click.option("--runs", type=click.IntRange(1, 20), default=3, show_default=True, help="Runs per scenario.")
@click.option(
    "--soak-minutes", type=click.FloatRange(0, 120), default=5, show_default=True, help="0: no soak."
)
@click.option(
    "--soak-rate", type=click.FloatRange(1, 2000), default=40, show_default=True, help="Listings/s."
)
@click.option(
    "--run-dir", type=click.Path(path_type=Path), default=ROOT / "load" / "results" / "reliability-run"
)
def main(runs: int, soak_minutes: float, soak_rate: float, run_dir: Path) -> None:
    """Run the fault scenarios and the soak; rewrite the figures in docs/reliability.md."""
    with stack(run_dir) as running:
        results = run_scenarios(running, runs)
        soaked = soak(running, soak_minutes, soak_rate) if soak_minutes else None
    table = figures_table(results, soaked, runs)
    write_doc(table)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": machine(),
                "scenarios": {k: [asdict(f) for f in v] for k, v in results.items()},
                "soak": asdict(soaked) if soaked else None,
            },
            indent=2,
        )
        + "\n"
    )
    click.echo(table)


if __name__ == "__main__":
    main()
