"""Several processes of one service in one container, behind one metrics port.

One Python process runs the worker's per-item work on one core. ``supervise`` starts N
copies of a service process (``multiprocessing`` spawn: each a fresh interpreter with its
own event loop and clients) and stays in front of them:

- **Metrics.** prometheus-client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is set
  (and emptied of old files) before any child starts, so every child writes its values to
  files there; the parent serves /metrics from a ``MultiProcessCollector`` over them.
  Counters and histograms add up over all children, including ones that have exited;
  gauges follow their catalog mode (``livesum``, ``livemax``, ``livemostrecent``), and an
  exited child's gauges are dropped (``mark_process_dead``). The directory is the setting's
  when ``PROMETHEUS_MULTIPROC_DIR`` is set, else a temporary one removed at exit.
- **Probes.** Each child rewrites a ``StatusFile`` on every heartbeat. /healthz is 200
  while every child beat within the liveness bound; /readyz is 200 when every child is
  ready, else it names each child's reasons.
- **Signals.** SIGTERM and SIGINT are forwarded to every child (SIGTERM), which drains and
  commits as a single worker does; children still running ``stop_timeout_seconds`` later
  are killed.
- **Failure.** A child that exits while no stop was asked for stops the others and makes
  ``supervise`` raise ``ChildFailed`` (a non-zero exit status): the container restarts as
  a whole, as a single worker that fails does, instead of a crash loop hiding in one pod.
- **Orphans.** A child whose parent is gone (killed without a chance to forward a signal)
  stops itself.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from streamproc.errors import ConfigError
from streamproc.stream.health import DEFAULT_LIVENESS_BOUND_SECONDS, HealthServer, read_notes, read_status

__all__ = ["ChildFailed", "MetricsPort", "supervise"]

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_WAIT_SECONDS = 0.5
_ORPHAN_CHECK_SECONDS = 1.0


class ChildFailed(RuntimeError):
    """A supervised process exited without being asked to stop."""


@dataclass(frozen=True)
class MetricsPort:
    host: str
    port: int
    #: The setting of the port, named when it is taken.
    setting: str


#: A picklable (module-level) function run in each child as ``main(*args, index, status_path)``.
ChildMain = Callable[..., None]


def supervise(
    main: ChildMain,
    args: Sequence[object],
    processes: int,
    *,
    name: str,
    metrics: MetricsPort | None,
    stop_timeout_seconds: float,
    liveness_bound_seconds: float = DEFAULT_LIVENESS_BOUND_SECONDS,
) -> None:
    """Run ``processes`` children of ``main`` until they stop; see the module docstring.

    Raises:
        ChildFailed: a child exited unexpectedly (the others were stopped first).
        ConfigError: the metrics port cannot be bound.
    """
    with _state_dirs() as (metrics_dir, status_dir):
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
        group = _Group(name, processes, status_dir, liveness_bound_seconds)
        server = _serve(registry, metrics, group) if metrics is not None else None
        try:
            group.run(main, args, stop_timeout_seconds, metrics_dir)
        finally:
            if server is not None:
                server.close()
    if group.failure is not None:
        raise ChildFailed(group.failure)


@contextlib.contextmanager
def _state_dirs() -> Iterator[tuple[Path, Path]]:
    """The metrics directory (emptied; set in the environment children inherit) and a
    directory for the status files; temporary ones are removed at the end."""
    configured = os.environ.get(MULTIPROC_ENV)
    temporary: list[Path] = [Path(tempfile.mkdtemp(prefix="streamproc-status-"))]
    if configured:
        metrics_dir = Path(configured)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in glob.glob(str(metrics_dir / "*.db")):  # a previous run's values
            os.remove(stale)
    else:
        metrics_dir = Path(tempfile.mkdtemp(prefix="streamproc-metrics-"))
        temporary.append(metrics_dir)
        os.environ[MULTIPROC_ENV] = str(metrics_dir)
    try:
        yield metrics_dir, temporary[0]
    finally:
        if not configured:
            os.environ.pop(MULTIPROC_ENV, None)
        for folder in temporary:
            shutil.rmtree(folder, ignore_errors=True)


def _serve(registry: CollectorRegistry, metrics: MetricsPort, group: _Group) -> HealthServer:
    try:
        server = HealthServer(
            registry,
            metrics.host,
            metrics.port,
            readiness=group.readiness,
            liveness=group.liveness,
            notices=group.notices,
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {metrics.host}:{metrics.port} ({exc.strerror or exc}); set "
            f"{metrics.setting} to a free port (0 picks one)"
        ) from exc
    log.info("metrics at http://%s:%d/metrics, probes at /healthz and /readyz", metrics.host, server.port)
    return server


class _Group:
    """The children, their status files, and the stop they were asked for (or not)."""

    def __init__(self, name: str, processes: int, status_dir: Path, bound: float) -> None:
        self._name = name
        self._count = processes
        self._status_dir = status_dir
        self._bound = bound
        self._children: list[BaseProcess] = []
        #: Indexes of the children that exited; written by the main thread only, because
        #: asking a Process from the probes' thread would race its reaping.
        self._exited: set[int] = set()
        self._stopping_since: float | None = None
        self._lock = threading.Lock()
        self.failure: str | None = None

    def status_path(self, index: int) -> Path:
        return self._status_dir / f"{index}.json"

    def run(self, main: ChildMain, args: Sequence[object], stop_timeout: float, metrics_dir: Path) -> None:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            context = multiprocessing.get_context("spawn")
            for index in range(self._count):
                if self._stopping_since is not None:
                    break
                child = context.Process(
                    target=_child,
                    args=(main, tuple(args), index, self.status_path(index), os.getpid()),
                    name=f"{self._name}-{index}",
                )
                child.start()
                with self._lock:
                    self._children.append(child)
                log.info("started %s process %d (pid %s)", self._name, index, child.pid)
            self._watch(stop_timeout, metrics_dir)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping %d processes", signal.Signals(signum).name, self._count)
        self.stop()

    def stop(self) -> None:
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
        for index, child in enumerate(self._snapshot()):
            if index not in self._exited:
                child.terminate()  # SIGTERM: the child drains and commits

    def _watch(self, stop_timeout: float, metrics_dir: Path) -> None:
        running = {child.sentinel: index for index, child in enumerate(self._children)}
        killed = False
        while running:
            for sentinel in wait(list(running), timeout=_WAIT_SECONDS):
                index = running.pop(cast(int, sentinel))
                child = self._children[index]
                child.join()
                self._exited.add(index)
                self._on_exit(child, metrics_dir)
            since = self._stopping_since
            if not killed and since is not None and time.monotonic() - since > stop_timeout:
                killed = True
                for index in running.values():
                    log.error("%s did not stop within %g s: killed", self._children[index].name, stop_timeout)
                    self._children[index].kill()

    def _on_exit(self, child: BaseProcess, metrics_dir: Path) -> None:
        if child.pid is not None:
            mark_process_dead(child.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
        code = child.exitcode
        asked = self._stopping_since is not None
        if asked and code in (0, -signal.SIGTERM):
            log.info("%s (pid %s) stopped", child.name, child.pid)
            return
        why = "unexpectedly" if not asked else "while stopping"
        log.error("%s (pid %s) exited %s with status %s", child.name, child.pid, why, code)
        if self.failure is None:
            self.failure = f"{child.name} (pid {child.pid}) exited {why} with status {code}"
        if not asked:
            log.error("stopping the other %s processes", self._name)
            self.stop()

    def liveness(self) -> list[str]:
        reasons: list[str] = []
        for index, child in enumerate(self._snapshot()):
            live, _ = read_status(self.status_path(index), bound_seconds=self._bound)
            reasons.extend(f"{child.name} (pid {child.pid}): {r}" for r in live)
        return reasons

    def readiness(self) -> list[str]:
        if self._stopping_since is not None:
            return [f"{self._name} processes stopping"]
        children = self._snapshot()
        reasons = [f"{len(children)} of {self._count} {self._name} processes started"]
        if len(children) == self._count:
            reasons = []
        for index, child in enumerate(children):
            if index in self._exited:
                reasons.append(f"{child.name} (pid {child.pid}) exited")
                continue
            _, not_ready = read_status(self.status_path(index), bound_seconds=self._bound)
            reasons.extend(f"{child.name} (pid {child.pid}): {r}" for r in not_ready)
        return reasons

    def notices(self) -> list[str]:
        return [
            f"{child.name} (pid {child.pid}): {note}"
            for index, child in enumerate(self._snapshot())
            for note in read_notes(self.status_path(index))
        ]

    def _snapshot(self) -> list[BaseProcess]:
        with self._lock:
            return list(self._children)


def _child(main: ChildMain, args: tuple[object, ...], index: int, status_path: Path, parent: int) -> None:
    """A child's entry: stop when orphaned, then run ``main``.

    Ctrl-C reaches the whole process group; the supervisor forwards it as SIGTERM, which
    the child's host handles once it runs (SIGINT ignored until then, so a child that is
    still starting does not die of a KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_stop_when_orphaned, args=(parent,), name="orphan-watch", daemon=True).start()
    main(*args, index, status_path)


def _stop_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_ORPHAN_CHECK_SECONDS)
    log.error("supervisor (pid %d) is gone: stopping", parent)
    os.kill(os.getpid(), signal.SIGTERM)
