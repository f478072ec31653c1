from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.config import CONFIG_FILE_ENV, check_bootstrap_servers, load_settings
from streamproc.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_FILE_ENV, raising=False)


def test_defaults_are_valid() -> None:
    settings = load_settings()
    assert settings.topics.verdicts == "moderation.verdicts.v1"
    assert settings.inference.max_attempts >= 1


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_INFERENCE__BASE_URL", "http://gpu-1:8000/v1")
    monkeypatch.setenv("STREAMPROC_INFERENCE__API_KEY", "s3cret")
    monkeypatch.setenv("STREAMPROC_POLICY__PATHS", '["/etc/streamproc/policies", "extra.yaml"]')
    settings = load_settings()
    assert settings.inference.base_url == "http://gpu-1:8000/v1"
    assert settings.policy.paths == [Path("/etc/streamproc/policies"), Path("extra.yaml")]
    assert "s3cret" not in settings.model_dump_json()  # secrets are masked when shown


def test_yaml_file_with_environment_taking_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "streamproc.yaml"
    config.write_text("kafka:\n  group_id: from-file\ninference:\n  model: from-file\n")
    monkeypatch.setenv("STREAMPROC_INFERENCE__MODEL", "from-env")
    settings = load_settings(config)
    assert (settings.kafka.group_id, settings.inference.model) == ("from-file", "from-env")


def test_invalid_values_name_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_INFERENCE__MAX_INFLIGHT", "0")
    with pytest.raises(
        ConfigError, match=r"STREAMPROC_INFERENCE__MAX_INFLIGHT: .*greater than or equal to 1"
    ):
        load_settings()


def test_invalid_values_from_the_file_name_the_key_and_the_file(tmp_path: Path) -> None:
    config = tmp_path / "streamproc.yaml"
    config.write_text("inference:\n  max_attempts: 0\n")
    with pytest.raises(ConfigError, match=rf"inference\.max_attempts in {config}: "):
        load_settings(config)


def test_invalid_keyword_overrides_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"worker\.linger_ms: "):
        load_settings(worker={"linger_ms": -1})


@pytest.mark.parametrize(
    ("value", "servers"),
    [("kafka:9092", "kafka:9092"), (" a:1 , b:65535", "a:1,b:65535"), ("[::1]:9092", "[::1]:9092")],
)
def test_bootstrap_servers_accepted(value: str, servers: str) -> None:
    assert check_bootstrap_servers(value) == servers


@pytest.mark.parametrize(
    "value", ["", " ", "kafka", "kafka:", ":9092", "kafka:0", "kafka:65536", "a:1,", "a:x"]
)
def test_bootstrap_servers_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        check_bootstrap_servers(value)


@pytest.mark.parametrize(
    ("env", "value", "example"),
    [
        ("STREAMPROC_POLICY__PATHS", "a.yaml, b", '["a.yaml", "b"]'),
        ("STREAMPROC_AUDIT__CATEGORY_RATES", "spam:0.5,adult=1", '{"spam": 0.5, "adult": 1.0}'),
        ("STREAMPROC_AUDIT__DECISION_RATES", "lots", '{"KEY": 0.1}'),
    ],
)
def test_json_settings_given_plain_values_get_an_example(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, example: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == f"{env} must be JSON, e.g. '{example}'"


def test_log_level_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_WORKER__LOG_LEVEL", "Warning")
    assert load_settings().worker.log_level == "warning"


def test_model_url_is_kept_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_INFERENCE__BASE_URL", "https://vllm.internal/v1")
    assert load_settings().inference.base_url == "https://vllm.internal/v1"


def test_topics_must_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_TOPICS__REVIEW", "moderation.verdicts.v1")
    with pytest.raises(ConfigError, match="topics must all differ: VERDICTS and REVIEW are both"):
        load_settings()


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
