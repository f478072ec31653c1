"""Several worker processes behind one metrics port: the supervisor with small real child
processes (spawned, prometheus-client multiprocess mode), its probes, signals and failures;
the setting and the command-line option; each member's Kafka identity."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from streamproc.cli import cli
from streamproc.config import KafkaSettings, Settings, WorkerSettings
from streamproc.dev.devstack import free_port
from streamproc.stream.health import StatusFile, read_status
from streamproc.worker.service import member_settings
from tests.factories import group_gone

ROOT = Path(__file__).resolve().parents[2]


# -- what each child runs (module level: spawned children import it) ---------------------------


class _Toy:
    """A service that counts once, reports ready, and runs until stopped (or misbehaves)."""

    def __init__(self, behaviour: str, index: int) -> None:
        self._behaviour, self._index = behaviour, index
        self._stopped = asyncio.Event()
        self._started = False

    def ready(self) -> list[str]:
        return [] if self._started else ["warming up"]

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        registry = CollectorRegistry()
        Counter("toy_items", "Items.", registry=registry).inc(self._index + 1)
        Gauge("toy_busy", "Busy.", registry=registry, multiprocess_mode="livesum").set(1)
        await asyncio.sleep(0.5 * self._index)  # the last child is ready last
        self._started = True
        if self._behaviour == "fail" and self._index == 1:
            await asyncio.sleep(1.5)
            os._exit(3)
        if self._behaviour == "block" and self._index == 0:
            await asyncio.sleep(1.5)
            time.sleep(30)  # noqa: ASYNC251 - the event loop stops beating, on purpose
        await self._stopped.wait()


def toy_child(behaviour: str, index: int, status_path: Path) -> None:
    from streamproc.stream import host

    host.run(_Toy(behaviour, index), StatusFile(status_path))


def _supervisor_main(behaviour: str, port: int) -> None:
    """The parent process of a test (run with ``python -c``): exit 0, or 1 on ChildFailed."""
    import logging

    from streamproc.stream.supervisor import ChildFailed, MetricsPort, supervise

    logging.basicConfig(level="INFO")
    try:
        supervise(
            toy_child,
            (behaviour,),
            2,
            name="toy",
            metrics=MetricsPort("127.0.0.1", port, "TOY_PORT"),
            stop_timeout_seconds=10,
            liveness_bound_seconds=2.0,
        )
    except ChildFailed as exc:
        print(f"failed: {exc}", flush=True)
        sys.exit(1)


# -- helpers -----------------------------------------------------------------------------------


class Parent:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process, self.port = process, port
        self._output: str | None = None

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def samples(self) -> dict[str, float]:
        families = text_string_to_metric_families(self.get("/metrics").text)
        return {s.name: s.value for f in families for s in f.samples}

    def wait_for(self, path: str, status: int, within: float = 30.0) -> httpx.Response:
        deadline = time.monotonic() + within
        while True:
            try:
                answer = self.get(path)
                if answer.status_code == status:
                    return answer
            except httpx.TransportError:
                answer = None
            if time.monotonic() > deadline:
                pytest.fail(f"{path} never answered {status}; last: {answer and answer.text}")
            time.sleep(0.1)

    def output(self) -> str:
        if self._output is None:
            self._output, _ = self.process.communicate(timeout=30)
        return self._output


StartParent = Callable[..., Parent]


@pytest.fixture
def start_parent() -> Iterator[StartParent]:
    started: list[Parent] = []

    def start(behaviour: str, **env: str) -> Parent:
        port = free_port()
        code = f"from tests.unit.test_supervisor import _supervisor_main as m; m({behaviour!r}, {port})"
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        started.append(Parent(process, port))
        return started[-1]

    yield start
    for parent in started:
        if parent.process.poll() is None:
            os.killpg(parent.process.pid, signal.SIGKILL)
        parent.process.communicate(timeout=30)  # reaps it and closes its pipe


# -- the supervisor ----------------------------------------------------------------------------


def test_one_port_sums_the_children_is_ready_when_all_are_and_sigterm_stops_all(
    start_parent: StartParent, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "multiproc"
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"stale")  # a previous run's file is wiped
    parent = start_parent("run", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    not_ready = parent.wait_for("/readyz", 503)
    assert "toy" in not_ready.text
    parent.wait_for("/readyz", 200)
    assert parent.get("/healthz").status_code == 200
    samples = parent.samples()
    assert samples["toy_items_total"] == 1 + 2  # child 0 counted 1, child 1 counted 2
    assert samples["toy_busy"] == 2  # livesum over two live children
    assert not (metrics_dir / "counter_99999.db").exists()

    parent.process.send_signal(signal.SIGTERM)  # the parent only, as Kubernetes does
    assert parent.process.wait(timeout=30) == 0, parent.output()
    assert group_gone(parent.process.pid, within=10.0), "a child outlived its supervisor"
    assert "toy-0" in parent.output()


def test_a_child_that_dies_stops_the_others_and_the_supervisor_fails(start_parent: StartParent) -> None:
    parent = start_parent("fail")
    assert parent.process.wait(timeout=60) == 1
    output = parent.output()
    assert "toy-1" in output and "exited unexpectedly with status 3" in output, output
    assert group_gone(parent.process.pid, within=10.0)


def test_healthz_fails_while_a_childs_event_loop_is_blocked(start_parent: StartParent) -> None:
    parent = start_parent("block")
    parent.wait_for("/readyz", 200)
    answer = parent.wait_for("/healthz", 503, within=20)
    assert "toy-0" in answer.text and "unresponsive" in answer.text
    assert parent.get("/readyz").status_code == 503  # not live is not ready either


def test_status_file_reports_readiness_and_goes_stale(tmp_path: Path) -> None:
    path = tmp_path / "0.json"
    assert read_status(path, bound_seconds=5) == ([], ["starting"])
    status = StatusFile(path)
    assert read_status(path, bound_seconds=5) == ([], ["service not started"])
    status.set_readiness(lambda: [])
    status.heartbeat.beat()
    assert read_status(path, bound_seconds=5) == ([], [])
    old = time.time() - 60
    os.utime(path, (old, old))
    live, _ = read_status(path, bound_seconds=5)
    assert live and "unresponsive" in live[0]


# -- the setting and the option ----------------------------------------------------------------


def test_processes_default_to_one_and_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerSettings().processes == 1
    monkeypatch.setenv("STREAMPROC_WORKER__PROCESSES", "4")
    assert Settings().worker.processes == 4
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        WorkerSettings(processes=0)


def test_a_bad_processes_setting_or_option_is_one_line() -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["check-config"], prog_name="streamproc", env={"STREAMPROC_WORKER__PROCESSES": "0"}
    )
    assert result.exit_code != 0
    assert "STREAMPROC_WORKER__PROCESSES" in result.output and len(result.output.strip().splitlines()) == 1
    result = runner.invoke(cli, ["worker", "--processes", "0"], prog_name="streamproc")
    assert result.exit_code == 2 and "'--processes'" in result.output


def test_each_member_gets_its_own_client_and_static_member_id() -> None:
    settings = Settings(kafka=KafkaSettings(client_id="w", group_instance_id="pod-a"))
    first, second = member_settings(settings, 0), member_settings(settings, 1)
    assert (first.kafka.client_id, second.kafka.client_id) == ("w-0", "w-1")
    assert (first.kafka.group_instance_id, second.kafka.group_instance_id) == ("pod-a-0", "pod-a-1")
    assert member_settings(Settings(), 1).kafka.group_instance_id is None
