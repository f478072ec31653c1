from __future__ import annotations

from pathlib import Path

from streamproc.config import TopicSettings
from streamproc.topics import load_topic_specs

ROOT = Path(__file__).resolve().parents[2]


def test_every_configured_topic_has_a_spec_with_an_existing_schema() -> None:
    specs = {s.name: s for s in load_topic_specs(ROOT / "topics")}
    assert set(specs) == set(TopicSettings().model_dump().values())
    for spec in specs.values():
        assert (ROOT / "topics" / spec.value_schema).is_file()
        assert spec.kafka_config()["cleanup.policy"] in {"delete", "compact", "compact,delete"}
