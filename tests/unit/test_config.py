from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.config import CONFIG_FILE_ENV, load_settings
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


def test_invalid_values_name_the_field_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_INFERENCE__MAX_INFLIGHT", "0")
    with pytest.raises(ConfigError, match=r"inference\.max_inflight: .*STREAMPROC_<SECTION>__<FIELD>"):
        load_settings()


def test_topics_must_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_TOPICS__REVIEW", "moderation.verdicts.v1")
    with pytest.raises(ConfigError, match="topics must all differ"):
        load_settings()


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
