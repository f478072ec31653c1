"""The image, built and run (test_image.py checks the Dockerfile without an engine).

scripts/tools/image.sh builds the production Dockerfile with buildah (chroot isolation: no
daemon) against a stand-in base made from Debian's packages (no registry is reachable), and
runs podman on the same image store. The services run as a deployment runs them: the image's
user, a read-only root filesystem with a tmpfs /tmp (and a volume for the quality store), and
the host's network to a real Kafka-protocol broker (the dev stack's Tansu) started here.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from streamproc.dev.devstack import Broker, free_port
from streamproc.policy import load_policy_set
from tests.deploy.test_image import RUNTIME

# One build and one broker: pytest-xdist's loadgroup is asked to keep the module on one worker.
pytestmark = [pytest.mark.deploy, pytest.mark.xdist_group("image")]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "tools" / "image.sh"
LOGS = ROOT / ".test-logs"
CHART_VALUES = yaml.safe_load((ROOT / "helm" / "streamproc" / "values.yaml").read_text())
#: 317 MB measured on the Debian stand-in: its base is 199 MB (Debian's python3 with pip and
#: venv, heavier than python:slim), the virtualenv and packs 118 MB. The bound leaves room for
#: the dependencies to grow by as much again, and fails when the build leaks into the runtime
#: stage (the builder's wheels or caches, or a context with .venv/ at 760 MB).
SIZE_LIMIT_BYTES = 450_000_000
#: As the chart runs the image (readOnlyRootFilesystem): only /tmp is writable, not the
#: /run and /var/tmp that podman's --read-only would add. Host networking reaches the broker on
#: loopback. No podman healthcheck: it schedules it with systemd timers; the test runs it.
TMP = "/tmp"  # noqa: S108 - the container's tmpfs
STORE = "/var/lib/streamproc"
HARDENED = ("--read-only", "--read-only-tmpfs=false", f"--tmpfs={TMP}", "--network=host", "--no-healthcheck")
UID, GID = (int(part) for part in RUNTIME.last("USER").value[0].split(":"))
#: Inside the container: who runs PID 1, how / is mounted, and which folders take a new file.
PROBE = f"""
import json, os, tempfile
folders = ["/", "/app", "/app/policies", "/opt/venv", "/etc", "/run", "/var/tmp", "{TMP}", "{STORE}"]
def writable(folder):
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False
status = dict(line.split(":", 1) for line in open("/proc/1/status"))
root = [line.split()[3] for line in open("/proc/self/mounts") if line.split()[1] == "/"][-1]
print(json.dumps({{
    "uid": int(status["Uid"].split()[1]), "gid": int(status["Gid"].split()[1]),
    "root": root.split(",")[0], "writable": [f for f in folders if writable(f)],
}}))
"""


#: podman on the image store that image.sh builds into.
PODMAN = ("bash", str(SCRIPT), "podman")


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)


def succeeded(step: str, result: subprocess.CompletedProcess[str]) -> str:
    """The step's output; a failure names the step and ends with the tool's stderr."""
    if result.returncode != 0:
        pytest.fail(f"{step} failed (exit {result.returncode}):\n{result.stderr[-4000:]}", pytrace=False)
    return result.stdout


@pytest.fixture(scope="module")
def image() -> str:
    """The image's ID, built once (cached steps are reused from the last build)."""
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(SCRIPT), "build"], capture_output=True, text=True, timeout=850, check=False
    )
    image_id = succeeded("scripts/tools/image.sh build", result).split()[-1]
    print(f"image {image_id[:19]} built in {time.monotonic() - started:.0f} s")
    return image_id


def run_once(image: str, *args: str) -> subprocess.CompletedProcess[str]:
    return podman("run", "--rm", *HARDENED, image, *args)


@pytest.fixture(scope="module")
def broker(image: str) -> Iterator[Broker]:
    with Broker(LOGS / "image-broker.log") as running:
        # The topics from the image's own specs (/app/topics), as a deployment creates them.
        apply = ("topics", "apply", "--bootstrap", running.bootstrap, "--replication-factor", "1")
        succeeded("`streamproc topics apply` in the image", run_once(image, *apply))
        yield running


def test_the_cli_and_the_shipped_packs(image: str) -> None:
    assert "Usage: streamproc" in succeeded("`streamproc --help`", run_once(image, "--help"))
    shown = json.loads(succeeded("`streamproc check-config`", run_once(image, "check-config")))
    shipped = load_policy_set([ROOT / "policies"])
    assert shown["policy"]["paths"] == ["/app/policies"]
    assert shown["policy_versions"] == shipped.versions, "the image's packs are not the shipped ones"
    checked = succeeded("`streamproc policy check`", run_once(image, "policy", "check", "/app/policies"))
    assert sum(line.startswith("ok ") for line in checked.splitlines()) == len(shipped.policies), checked


def test_the_image_size(image: str, record_property: Callable[[str, object], None]) -> None:
    inspected = podman("image", "inspect", "--format", "{{.Size}}", image)
    size = int(succeeded("podman image inspect", inspected))
    record_property("image_size_bytes", size)
    print(f"image size: {size / 1e6:.0f} MB (Debian stand-in base)")
    assert size < SIZE_LIMIT_BYTES, f"the image is {size / 1e6:.0f} MB, over {SIZE_LIMIT_BYTES / 1e6:.0f} MB"


@dataclass(frozen=True)
class Service:
    args: tuple[str, ...]  # after the entrypoint; none: the image's CMD
    port_variable: str  # the port of its /healthz
    chart_key: str  # its section of the chart's values: the grace period
    store: bool  # writes its join store under /var/lib/streamproc


SERVICES = [
    Service((), "STREAMPROC_METRICS__PORT", "worker", store=False),
    Service(("quality",), "STREAMPROC_QUALITY__METRICS_PORT", "quality", store=True),
]


@dataclass
class Container:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


@contextlib.contextmanager
def started(image: str, name: str, options: list[str], args: tuple[str, ...]) -> Iterator[Container]:
    """`podman run` in the foreground: its exit status is the service's."""
    log = LOGS / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        argv = [*PODMAN, "run", "--rm", "--name", name, *HARDENED, *options, image, *args]
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield Container(name, process, log)
        finally:
            if process.poll() is None:
                podman("rm", "--force", "--time", "0", name)
                process.wait(30)


def wait_healthy(container: Container, port: int, within: float = 90) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert container.process.poll() is None, f"{container.name} exited:\n{container.tail()}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    pytest.fail(f"{container.name}: no /healthz 200 within {within:.0f} s:\n{container.tail()}")


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.chart_key)
def test_service_runs_read_only_passes_its_healthcheck_and_stops_on_sigterm(
    image: str, broker: Broker, service: Service, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "STREAMPROC_METRICS__HOST": "127.0.0.1",
        service.port_variable: str(port),
        # Nothing answers there: the worker starts anyway and holds items until a model server does.
        "STREAMPROC_INFERENCE__BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
    }
    options = [f"--env={key}={value}" for key, value in env.items()]
    store = tmp_path / "store"
    if service.store:
        store.mkdir()
        os.chown(store, UID, GID)
        options.append(f"--volume={store}:{STORE}")
    name = f"streamproc-test-{service.chart_key}-{uuid.uuid4().hex[:8]}"
    with started(image, name, options, service.args) as container:
        wait_healthy(container, port)
        # The Dockerfile's HEALTHCHECK, which reads the port from STREAMPROC_METRICS__PORT.
        healthcheck = RUNTIME.last("HEALTHCHECK").value[1:]
        check = podman("exec", f"--env=STREAMPROC_METRICS__PORT={port}", name, *healthcheck, timeout=30)
        succeeded(f"{name}: the HEALTHCHECK command", check)
        seen = json.loads(succeeded(f"{name}: the probe", podman("exec", name, "python", "-c", PROBE)))
        assert (seen["uid"], seen["gid"]) == (UID, GID), f"{name} runs as {seen['uid']}:{seen['gid']}"
        assert seen["root"] == "ro", f"{name}: / is mounted {seen['root']}"
        expected = [TMP, STORE] if service.store else [TMP]
        assert seen["writable"] == expected, f"{name}: writable folders {seen['writable']}"
        succeeded(f"{name}: SIGTERM", podman("kill", "--signal", "TERM", name))
        grace = CHART_VALUES[service.chart_key]["terminationGracePeriodSeconds"]
        try:
            status = container.process.wait(grace)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still runs {grace} s after SIGTERM:\n{container.tail()}")
        assert status == 0, f"{name} exited {status} on SIGTERM:\n{container.tail()}"
    assert "Read-only file system" not in container.log.read_text(), container.tail()
    if service.store:
        assert list(store.iterdir()), "the quality service wrote nothing to /var/lib/streamproc"
