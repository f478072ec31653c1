"""A model server URL may carry credentials (``https://user:secret@host/v1``): the client
connects with them, and `check-config`, the logs, /readyz and setting errors never show them."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from streamproc.cli import cli
from streamproc.config import CONFIG_FILE_ENV, InferenceSettings, Settings
from streamproc.errors import InferenceUnavailable, redact_url
from streamproc.inference import InferenceClient, ModelRouter
from streamproc.metrics import NOOP, create
from streamproc.stream.health import HealthServer
from streamproc.worker.service import ModerationService
from tests.factories import label_policies

from .test_inference_client import REQUEST

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-pw"
URL = f"https://alice:{SECRET}@model.test/v1"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://vllm:8000/v1", "http://vllm:8000/v1"),
        ("https://alice:s3cret@model.test/v1", "https://***@model.test/v1"),
        ("https://TOKEN@model.test:8443/v1", "https://***@model.test:8443/v1"),
        ("https://alice:p@ss@model.test/v1", "https://***@model.test/v1"),  # an unescaped @
        ("alice:s3cret@model.test/v1", "***@model.test/v1"),  # no scheme: a bad setting
        ("https://h/v1?api-version=2&api_key=k&sig=x#f", "https://h/v1?api-version=2&api_key=***&sig=***#f"),
        ("https://h/v1/a@b", "https://h/v1/a@b"),  # an @ in the path is not userinfo
    ],
)
def test_redact_url_masks_userinfo_and_credential_parameters(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_check_config_never_prints_a_url_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv(CONFIG_FILE_ENV, raising=False)
    env = {
        "STREAMPROC_INFERENCE__BASE_URL": URL,
        "STREAMPROC_CASCADE__BASE_URL": f"https://bob:{SECRET}@second.test/v1",
        "STREAMPROC_EMBEDDING__BASE_URL": f"https://embed.test/v1?token={SECRET}",
    }
    result = CliRunner().invoke(cli, ["check-config"], env=env)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    shown = json.loads(result.output[result.output.index("{") :])
    assert shown["inference"]["base_url"] == "https://***@model.test/v1"
    assert shown["cascade"]["base_url"] == "https://***@second.test/v1"
    assert shown["embedding"]["base_url"] == "https://embed.test/v1?token=***"
    assert Settings(inference={"base_url": URL}).inference.base_url == URL  # kept for connecting


def test_a_bad_url_setting_is_refused_without_its_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_FILE_ENV, raising=False)
    env = {"STREAMPROC_INFERENCE__BASE_URL": f"https://alice:{SECRET}@model.test:99999/v1"}
    result = CliRunner().invoke(cli, ["check-config"], env=env)
    assert result.exit_code == 2
    assert "STREAMPROC_INFERENCE__BASE_URL" in result.stderr and "invalid port" in result.stderr
    assert SECRET not in result.stderr and "https://***@model.test:99999/v1" in result.stderr


def _down(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ConnectError("connection refused")

    return httpx.MockTransport(handler)


async def test_client_logs_errors_and_readyz_show_the_url_masked(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[httpx.Request] = []
    settings = InferenceSettings(
        base_url=URL, model="m", max_attempts=1, breaker_failures=1, on_unavailable="review"
    )
    service = ModerationService(
        Settings(inference=settings), label_policies(), create(CollectorRegistry(), consumed_topics=())
    )
    caplog.set_level(logging.INFO, logger="streamproc.inference.client")
    async with InferenceClient(settings, NOOP, transport=_down(seen)) as client:
        with pytest.raises(InferenceUnavailable) as failed:
            await client.complete(REQUEST)
        assert not client.available  # the circuit opened: a WARNING naming the server
        # the service's own readiness, with its client and a started pipeline in place
        service._client = ModelRouter(client, None)
        service._pipeline = SimpleNamespace(readiness=list)  # type: ignore[assignment]
        health = HealthServer(CollectorRegistry(), "127.0.0.1", 0, readiness=service.ready)
        try:
            readyz = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{health.port}/readyz", timeout=10)
        finally:
            health.close()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "model server https://***@model.test/v1 unavailable: circuit opened" in warning
    assert (readyz.status_code, readyz.text) == (
        503,
        "model server https://***@model.test/v1 unavailable: circuit open\n",
    )
    for text in (warning, readyz.text, str(failed.value)):
        assert SECRET not in text
    # the request itself went out with the credentials, as HTTP basic auth
    assert seen[0].url.host == "model.test"
    basic = base64.b64encode(f"alice:{SECRET}".encode()).decode()
    assert seen[0].headers["authorization"] == f"Basic {basic}"
