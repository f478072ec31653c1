from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from streamproc.cli import cli
from streamproc.config import CONFIG_FILE_ENV
from streamproc.dev.devstack import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_FILE_ENV, raising=False)


def test_schemas_export_check_passes_on_the_committed_files() -> None:
    result = CliRunner().invoke(
        cli, ["schemas", "export", "--check", "--out", str(ROOT / "topics" / "schemas")]
    )
    assert result.exit_code == 0, result.output


def test_schemas_export_check_fails_and_says_how_to_fix(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["schemas", "export", "--check", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "run `streamproc schemas export`" in result.output


def test_schemas_export_writes_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["schemas", "export", "--out", str(tmp_path)])
    assert result.exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "appeal-event.v1.json",
        "audit-sample.v1.json",
        "dead-letter.v1.json",
        "label-event.v1.json",
        "listing-event.v1.json",
        "verdict.v1.json",
        "video-event.v1.json",
    ]


def test_check_config_prints_settings_and_policy_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_INFERENCE__API_KEY", "s3cret")
    result = CliRunner().invoke(cli, ["check-config"])
    assert result.exit_code == 0, result.output
    assert "marketplace-listings@" in result.output and "s3cret" not in result.output


def test_check_config_names_a_bad_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_KAFKA__AUTO_OFFSET_RESET", "middle")
    result = CliRunner().invoke(cli, ["check-config"])
    assert result.exit_code == 2  # a configuration error
    assert "STREAMPROC_KAFKA__AUTO_OFFSET_RESET: " in result.stderr


def test_topics_apply_without_a_broker_names_the_address() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        cli, ["topics", "apply", "--bootstrap", bootstrap, "--dir", str(ROOT / "topics")]
    )
    assert result.exit_code == 1
    assert f"cannot reach Kafka at {bootstrap}" in result.output


def test_topics_apply_with_a_broken_spec_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: x\npartitions: zero\n")
    result = CliRunner().invoke(
        cli, ["topics", "apply", "--bootstrap", "127.0.0.1:1", "--dir", str(tmp_path)]
    )
    assert result.exit_code == 2  # a configuration error, found before Kafka is tried
    assert "bad.yaml" in result.output and "partitions" in result.output


def test_demo_needs_a_model_server() -> None:
    result = CliRunner().invoke(cli, ["demo"])
    assert result.exit_code == 2
    assert "--vllm-url" in result.output


def test_worker_without_kafka_names_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("STREAMPROC_KAFKA__BOOTSTRAP_SERVERS", bootstrap)
    result = CliRunner().invoke(cli, ["worker"])
    assert result.exit_code == 1
    assert f"cannot reach Kafka at {bootstrap}" in result.output
