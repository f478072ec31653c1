"""Summaries of a load run: throughput, latency percentiles, JSON, markdown and a PNG plot."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from streamproc.dev.devstack import cpu_flags, proc_cpuinfo

__all__ = [
    "LatencySummary",
    "RunReport",
    "cpu_description",
    "load_average",
    "machine_description",
    "percentile",
    "spread",
    "summarise",
]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class LatencySummary:
    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float


def summarise(latencies: Sequence[float]) -> LatencySummary:
    return LatencySummary(
        count=len(latencies),
        p50=percentile(latencies, 50),
        p90=percentile(latencies, 90),
        p99=percentile(latencies, 99),
        max=max(latencies, default=math.nan),
        mean=sum(latencies) / len(latencies) if latencies else math.nan,
    )


def machine_description() -> str:
    cores = os.cpu_count() or 0
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory = math.nan
    cpu = cpu_description(proc_cpuinfo())
    python = platform.python_version()
    return (
        f"{platform.machine()}{f' ({cpu})' if cpu else ''}, {cores} cores, {memory:.0f} GiB RAM, "
        f"{platform.system()}, Python {python}"
    )


def cpu_description(cpuinfo: str) -> str:
    """The CPU model and its widest x86 vector extension, from /proc/cpuinfo's text: what a
    model server on CPU runs at depends on both, and machines called alike differ in them."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())  # the first processor's
    flags = cpu_flags(cpuinfo)
    vector = next((name for flag, name in _VECTOR_EXTENSIONS if flag in flags), "")
    return ", ".join(part for part in (fields.get("model name", ""), vector) if part)


#: Flag in /proc/cpuinfo and its name, widest first.
_VECTOR_EXTENSIONS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"))


def load_average() -> str:
    """The machine's load over the last 1, 5 and 15 minutes (other work shares the CPUs)."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def spread(values: Sequence[float]) -> dict[str, float]:
    """Min, median and max of several runs' figures."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {"min": ordered[0], "median": median, "max": ordered[-1]}


@dataclass
class RunReport:
    """One open-loop run: what was offered, what came back, and how fast."""

    name: str
    target_rate: float
    duration_seconds: float
    sent: int
    received: int
    throughput: float  # received per second over the run
    latency: LatencySummary
    #: (seconds since start of the send, end-to-end latency) of every received item.
    samples: list[tuple[float, float]] = field(default_factory=list, repr=False)
    machine: str = field(default_factory=machine_description)
    #: Latency by stage, where the run can tell (the worker's verdicts say what it spent).
    stages: dict[str, LatencySummary] = field(default_factory=dict)
    #: The worker's adaptive limit during the run (see load/bench_latency.py).
    gate: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        name: str,
        rate: float,
        offsets: Sequence[float],
        sent: int,
        samples: Sequence[tuple[float, float]],
    ) -> RunReport:
        """From (scheduled send offset, latency) pairs; throughput runs to the last answer."""
        finished = max((offset + latency for offset, latency in samples), default=0.0)
        return cls(
            name=name,
            target_rate=rate,
            duration_seconds=offsets[-1] if offsets else 0.0,
            sent=sent,
            received=len(samples),
            throughput=len(samples) / max(1e-9, finished),
            latency=summarise([latency for _, latency in samples]),
            samples=list(samples),
        )

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("samples")
        return json.dumps(data, indent=2)

    def to_markdown(self) -> str:
        lat = self.latency
        return "\n".join(
            [
                f"### {self.name}",
                "",
                f"Machine: {self.machine}",
                "",
                "| target rate | sent | received | throughput | p50 | p90 | p99 | max |",
                "|---|---|---|---|---|---|---|---|",
                f"| {self.target_rate:.1f}/s | {self.sent} | {self.received} | {self.throughput:.1f}/s "
                f"| {lat.p50:.3f} s | {lat.p90:.3f} s | {lat.p99:.3f} s | {lat.max:.3f} s |",
                "",
            ]
        )

    def write(self, folder: Path) -> list[Path]:
        """Write ``report.json``, ``report.md`` and ``latency.png`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / "report.json", folder / "report.md", folder / "latency.png"]
        paths[0].write_text(self.to_json() + "\n")
        paths[1].write_text(self.to_markdown())
        plot_latency(self, paths[2])
        return paths


def plot_latency(report: RunReport, path: Path) -> None:
    """Latency of every item over the run, with a rolling p99 line."""
    import matplotlib  # noqa: PLC0415 - heavy, only for plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(9, 4.5))
    if report.samples:
        xs, ys = zip(*sorted(report.samples), strict=True)
        ax.scatter(xs, ys, s=4, alpha=0.4, label="item")
        window = max(1, len(ys) // 50)
        rolling = [percentile(ys[max(0, i - window) : i + 1], 99) for i in range(len(ys))]
        ax.plot(xs, rolling, color="tab:red", label=f"rolling p99 ({window} items)")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("end-to-end latency (s)")
    ax.set_title(f"{report.name}: {report.target_rate:.1f}/s offered, {report.throughput:.1f}/s served")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
