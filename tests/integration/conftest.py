"""Real parts for the integration suite: the Tansu broker and a vLLM server, started once
per session; a fresh set of topics and a worker process per test."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamproc.config import KafkaSettings, TopicSettings
from streamproc.dev.devstack import Broker, ManagedProcess, VllmServer, free_port, launched, wait_for_port
from streamproc.topics import apply_topics, load_topic_specs
from tests.factories import label_pack

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".test-logs"
SERVED_MODEL = "streamproc-test-model"
#: The same model under a second name: the cascade's second model in tests.
CASCADE_MODEL = "streamproc-test-model-b"
EMBEDDING_MODEL = "streamproc-test-embedding"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    with Broker(LOGS / "broker.log") as running:
        yield running


@dataclass(frozen=True)
class ModelServers:
    generative: VllmServer
    #: The first layers of the same model in pooling mode: the shipped packs' embedding_probe.
    embedding: VllmServer


def _configured_servers() -> ModelServers | None:
    """The servers `make test` names in the environment (None when it names none)."""
    python, model = os.environ.get("STREAMPROC_TEST_VLLM_PYTHON"), os.environ.get("STREAMPROC_TEST_MODEL_DIR")
    backbone = os.environ.get("STREAMPROC_TEST_EMBEDDING_MODEL_DIR")
    if not python or not model or not backbone:
        return None
    # --enforce-eager skips torch.compile: start-up drops from about 125 s to 35 s on two
    # cores, at a throughput cost that these tests do not measure.
    return ModelServers(
        VllmServer(
            Path(python),
            Path(model),
            SERVED_MODEL,
            LOGS / "vllm.log",
            extra_args=["--enforce-eager"],
            other_names=[CASCADE_MODEL],
        ),
        VllmServer(
            Path(python),
            Path(backbone),
            EMBEDDING_MODEL,
            LOGS / "vllm-embedding.log",
            extra_args=["--enforce-eager"],
            pooling=True,
        ),
    )


@pytest.fixture(scope="session", autouse=True)
def _launched_servers(request: pytest.FixtureRequest) -> Iterator[ModelServers | None]:
    """Both model servers launched as the tier begins, if any of its tests needs them, without
    waiting: they start (most of a minute) while the tests that need only the broker, ordered
    first (tests/conftest.py), run."""
    needed = any("model_servers" in getattr(item, "fixturenames", ()) for item in request.session.items)
    servers = _configured_servers() if needed else None
    with launched([servers.generative, servers.embedding] if servers else []):
        yield servers


@pytest.fixture(scope="session")
def model_servers(_launched_servers: ModelServers | None) -> ModelServers:
    if _launched_servers is None:
        pytest.fail(
            "the integration tests need real vLLM servers. Run them with `make test`, which builds "
            "the server's virtualenv and the models, or set STREAMPROC_TEST_VLLM_PYTHON (python of a "
            "virtualenv with vllm), STREAMPROC_TEST_MODEL_DIR (a model directory) and "
            "STREAMPROC_TEST_EMBEDDING_MODEL_DIR (its backbone: scripts/prepare_model.sh backbone).",
            pytrace=False,
        )
    _launched_servers.generative.wait_healthy()
    _launched_servers.embedding.wait_healthy()
    return _launched_servers


@pytest.fixture(scope="session")
def vllm(model_servers: ModelServers) -> VllmServer:
    return model_servers.generative


@pytest.fixture(scope="session")
def embedding_server(model_servers: ModelServers) -> VllmServer:
    return model_servers.embedding


@pytest.fixture
def topics(broker: Broker) -> TopicSettings:
    """The project's topic specs under names unique to this test."""
    suffix = uuid.uuid4().hex[:8]
    specs = [s.model_copy(update={"name": f"{s.name}.{suffix}"}) for s in load_topic_specs(ROOT / "topics")]
    asyncio.run(apply_topics(broker.bootstrap, specs, replication_factor=1))
    return TopicSettings(
        **{field: f"{name}.{suffix}" for field, name in TopicSettings().model_dump().items()}
    )


@dataclass
class Worker:
    process: ManagedProcess
    metrics_port: int

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Current samples as {(name, sorted labels): value}."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def total(self, metric: str, /, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        return sum(
            value
            for (sample, sample_labels), value in self.metrics().items()
            if sample == metric and set(labels.items()) <= set(sample_labels)
        )


StartWorker = Callable[..., Worker]
StartQuality = Callable[..., Worker]

#: Every consumer group of these tests, for a join in 2 s on Tansu rather than 5 s (the
#: worker's default). A test of the session timeout sets its own.
SESSION_TIMEOUT_SECONDS = Broker.SESSION_TIMEOUT_SECONDS
GROUP_JOIN_ENV = {"STREAMPROC_KAFKA__SESSION_TIMEOUT_SECONDS": str(SESSION_TIMEOUT_SECONDS)}


def group_kafka(broker: Broker, group_id: str) -> KafkaSettings:
    """Settings of an in-process consumer group on the test broker (GROUP_JOIN_ENV's timeout)."""
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap, group_id=group_id, session_timeout_seconds=SESSION_TIMEOUT_SECONDS
    )


def _start(command: str, port: int, env: dict[str, str]) -> Worker:
    """`streamproc COMMAND` with this environment, once its metrics port answers."""
    process = ManagedProcess(
        command,
        [sys.executable, "-m", "streamproc", command],
        LOGS / f"{command}-{uuid.uuid4().hex[:6]}.log",
        env={**GROUP_JOIN_ENV, **env},
    )
    process.start()
    if not wait_for_port("127.0.0.1", port, timeout=60):
        process.stop()
        pytest.fail(f"{command} did not start; its log:\n{process.log_tail()}", pytrace=False)
    return Worker(process, port)


def _model_and_topics(servers: ModelServers, topics: TopicSettings) -> dict[str, str]:
    return {
        "STREAMPROC_INFERENCE__BASE_URL": servers.generative.base_url,
        "STREAMPROC_INFERENCE__MODEL": SERVED_MODEL,
        "STREAMPROC_EMBEDDING__BASE_URL": servers.embedding.base_url,
        "STREAMPROC_EMBEDDING__MODEL": EMBEDDING_MODEL,
        "STREAMPROC_METRICS__HOST": "127.0.0.1",
        "STREAMPROC_POLICY__PATHS": json.dumps([str(ROOT / "policies")]),
        **{f"STREAMPROC_TOPICS__{field.upper()}": name for field, name in topics.model_dump().items()},
    }


def label_policy_paths(directory: Path) -> dict[str, str]:
    """Worker env for the shipped packs scored with ``label_logprob`` (one short prompt per
    item instead of one per category and one more), for tests whose point is delivery rather
    than scoring and whose item counts the channel scorer would make too slow on a CPU server."""
    for pack in sorted((ROOT / "policies").glob("*.yaml")):
        label_pack(pack, directory)
    return {"STREAMPROC_POLICY__PATHS": json.dumps([str(directory)])}


@pytest.fixture
def start_worker(
    broker: Broker, model_servers: ModelServers, topics: TopicSettings, tmp_path: Path
) -> Iterator[StartWorker]:
    """Start `streamproc worker` processes wired to this test's topics; extra env overrides."""
    started: list[Worker] = []

    def start(**env: str) -> Worker:
        port = free_port()
        settings_env = {
            "STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "STREAMPROC_KAFKA__GROUP_ID": f"streamproc-test-{uuid.uuid4().hex[:8]}",
            "STREAMPROC_METRICS__PORT": str(port),
            **_model_and_topics(model_servers, topics),
            **env,
        }
        started.append(_start("worker", port, settings_env))
        return started[-1]

    yield start
    for worker in started:
        worker.process.stop()


@pytest.fixture
def start_quality(
    broker: Broker, model_servers: ModelServers, topics: TopicSettings, tmp_path: Path
) -> Iterator[StartQuality]:
    """Start `streamproc quality` on this test's topics, always on the same store; extra env overrides.

    Each start joins a new consumer group, so a restart reads every record again.
    """
    started: list[Worker] = []

    def start(**env: str) -> Worker:
        port = free_port()
        settings_env = {
            "STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "STREAMPROC_QUALITY__GROUP_ID": f"quality-test-{uuid.uuid4().hex[:8]}",
            "STREAMPROC_QUALITY__DATA_DIR": str(tmp_path / "quality"),
            "STREAMPROC_QUALITY__METRICS_PORT": str(port),
            "STREAMPROC_QUALITY__REFRESH_SECONDS": "0.2",
            **_model_and_topics(model_servers, topics),
            **env,
        }
        started.append(_start("quality", port, settings_env))
        return started[-1]

    yield start
    for quality in started:
        quality.process.stop()


async def wait_until(condition: Callable[[], bool], what: str, within: float = 120.0) -> None:
    """Poll; fail naming what never happened."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}", pytrace=False)
        await asyncio.sleep(0.2)
