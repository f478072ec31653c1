"""The embedding_probe scorer: heads files, their checks at load, the scores they give, the
embeddings answer and the router that sends embeddings requests to their own server."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamproc.config import EmbeddingSettings, InferenceSettings
from streamproc.errors import ConfigError, InferenceProtocolError
from streamproc.inference import InferenceClient, ModelRouter, read_answer
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.metrics import NOOP
from streamproc.policy import SCORERS, item_content, load_pack, uses_embeddings
from streamproc.policy.heads import HEADS_FORMAT
from tests.factories import listing

WIDTH = 4
CATEGORIES = ("scam", "weapons")


def heads_dict(**overrides: Any) -> dict[str, Any]:
    """Heads over 4 features: feature 0 says "violating", 1 "scam", 2 "weapons"."""
    data: dict[str, Any] = {
        "format": HEADS_FORMAT,
        "backbone": {
            "source": "test-model",
            "layers": 2,
            "source_layers": 4,
            "pooling": "mean",
            "width": WIDTH,
        },
        "mean": [0.0] * WIDTH,
        "scale": [1.0] * WIDTH,
        "flagged": {"weights": [4.0, 0.0, 0.0, 0.0], "bias": -2.0},
        "categories": {
            "scam": {"weights": [0.0, 4.0, 0.0, 0.0], "bias": 0.0},
            "weapons": {"weights": [0.0, 0.0, 4.0, 0.0], "bias": 0.0},
        },
        "provenance": {"dataset_sha256": "0" * 64},
    }
    data.update(overrides)
    return data


def write_probe_pack(
    directory: Path, heads: dict[str, Any] | None = None, *, sha256: str | None = None
) -> Path:
    """A small listing pack of this test's own, scored by heads written beside it."""
    content = json.dumps(heads or heads_dict()).encode()
    (directory / "test.heads.json").write_bytes(content)
    digest = sha256 or hashlib.sha256(content).hexdigest()
    categories = "".join(
        f"  - id: {c}\n    title: {c}\n    description: {c} items\n    reason_code: {c.upper()}\n"
        f"    seller_message: Not allowed.\n    thresholds: {{reject: 0.9, review: 0.5}}\n"
        for c in CATEGORIES
    )
    pack = directory / "probe.yaml"
    pack.write_text(
        "name: probe-test\ncontent_type: listing\nscorer: embedding_probe\npreamble: Test pack.\n"
        f"heads: {{file: test.heads.json, sha256: {digest}}}\ncategories:\n{categories}",
        encoding="utf-8",
    )
    return pack


def answer(vector: list[float]) -> ModelAnswer:
    return ModelAnswer(text="", embeddings=(tuple(vector),))


def test_pack_loads_its_heads_and_versions_them(tmp_path: Path) -> None:
    policy = load_pack(write_probe_pack(tmp_path))
    assert policy.probe is not None and uses_embeddings(policy)
    assert policy.probe.backbone.width == WIDTH
    other = tmp_path / "other"
    other.mkdir()
    changed = heads_dict(flagged={"weights": [3.0, 0.0, 0.0, 0.0], "bias": -2.0})
    assert load_pack(write_probe_pack(other, changed)).version != policy.version


def test_scores_share_the_flagged_probability_by_category(tmp_path: Path) -> None:
    policy = load_pack(write_probe_pack(tmp_path))
    scorer = SCORERS["embedding_probe"]
    scores = scorer.scores(policy, [answer([2.0, 1.0, -1.0, 0.0])])
    flagged = 1 / (1 + math.exp(-(4 * 2.0 - 2.0)))
    weapons_share = (1 / (1 + math.exp(4.0))) / (1 / (1 + math.exp(-4.0)))
    assert scores["scam"] == pytest.approx(flagged)  # the likeliest category gets P(flagged)
    assert scores["weapons"] == pytest.approx(flagged * weapons_share)
    clean = scorer.scores(policy, [answer([-2.0, 1.0, 0.0, 0.0])])
    assert max(clean.values()) < 0.01


def test_scorer_requests_one_embedding_of_the_item_text(tmp_path: Path) -> None:
    policy = load_pack(write_probe_pack(tmp_path))
    event = listing(title="Bike", description="Red")
    [request] = SCORERS["embedding_probe"].requests(policy, item_content(policy, event))
    assert request.endpoint == "embeddings"
    assert request.body == {"input": [item_content(policy, event).text]}
    assert request.prompts == 1


def test_an_embedding_of_another_width_is_refused_not_scored(tmp_path: Path) -> None:
    policy = load_pack(write_probe_pack(tmp_path))
    with pytest.raises(
        InferenceProtocolError, match="returned 3 features; the pack's heads were trained on 4"
    ):
        SCORERS["embedding_probe"].scores(policy, [answer([1.0, 2.0, 3.0])])
    with pytest.raises(InferenceProtocolError, match="one embedding"):
        SCORERS["embedding_probe"].scores(policy, [ModelAnswer(text="")])


@pytest.mark.parametrize(
    ("heads", "sha256", "message"),
    [
        (None, "f" * 64, "is not the ffff"),
        (
            heads_dict(categories={"scam": heads_dict()["categories"]["scam"]}),
            None,
            r"no heads for categories \['weapons'\]",
        ),
        (heads_dict(mean=[0.0] * 3), None, "the backbone's width 4"),
        (heads_dict(scale=[1.0, 0.0, 1.0, 1.0]), None, "scale must be positive"),
        (heads_dict(format="pickle"), None, "format"),
    ],
)
def test_heads_that_do_not_fit_are_one_error_at_load(
    tmp_path: Path, heads: dict[str, Any] | None, sha256: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_pack(write_probe_pack(tmp_path, heads, sha256=sha256))
    assert "test.heads.json" in str(caught.value)


def test_a_pack_cannot_carry_heads_inline_or_without_the_scorer(tmp_path: Path) -> None:
    pack = write_probe_pack(tmp_path)
    text = pack.read_text()
    pack.write_text(text + "probe: {}\n")
    with pytest.raises(ConfigError, match="`probe` is not a pack key"):
        load_pack(pack)
    pack.write_text(text.replace("scorer: embedding_probe", "scorer: label_logprob"))
    with pytest.raises(ConfigError, match="heads apply to it only"):
        load_pack(pack)
    pack.write_text("\n".join(line for line in text.splitlines() if not line.startswith("heads:")))
    with pytest.raises(ConfigError, match="embedding_probe scorer needs heads"):
        load_pack(pack)


def test_embeddings_answer_is_read_in_input_order() -> None:
    request = ModelRequest("embeddings", {"input": ["a", "b"]})
    data = [{"index": 1, "embedding": [3.0, 4.0]}, {"index": 0, "embedding": [1.0, 2.0]}]
    body = {
        "data": data,
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    read = read_answer(request, json.dumps(body).encode())
    assert read.embeddings == ((1.0, 2.0), (3.0, 4.0)) and read.prompt_tokens == 7
    with pytest.raises(InferenceProtocolError, match="one embedding per input"):
        read_answer(request, json.dumps({"data": data[:1]}).encode())
    uneven = {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2.0]}]}
    with pytest.raises(InferenceProtocolError, match="different widths"):
        read_answer(request, json.dumps(uneven).encode())


def test_embedding_settings_default_to_the_model_server() -> None:
    main = InferenceSettings(base_url="http://gen:8000/v1", model="gen", timeout_seconds=7)
    assert EmbeddingSettings().inference(main) is None
    own = EmbeddingSettings(base_url="http://emb:8000/v1", model="emb").inference(main)
    assert own is not None and (own.base_url, own.model, own.timeout_seconds) == (
        "http://emb:8000/v1",
        "emb",
        7,
    )


async def test_router_sends_embeddings_to_the_embedding_server() -> None:
    seen: list[str] = []

    def server(name: str) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            seen.append(f"{name} {request.url.path} {json.loads(request.content)['model']}")
            if request.url.path.endswith("/embeddings"):
                return httpx.Response(200, json={"data": [{"index": 0, "embedding": [1.0]}]})
            return httpx.Response(200, json={"choices": [{"message": {"content": "N"}}]})

        return httpx.MockTransport(handle)

    generative = InferenceSettings(base_url="http://gen:8000/v1", model="gen")
    embedding = InferenceSettings(base_url="http://emb:8000/v1", model="emb")
    async with (
        InferenceClient(generative, NOOP, transport=server("gen")) as first,
        InferenceClient(embedding, NOOP, transport=server("emb")) as second,
    ):
        router = ModelRouter(first, second)
        await router.complete(ModelRequest("embeddings", {"input": ["x"]}))
        await router.complete(ModelRequest("chat/completions", {"messages": []}))
        assert router.available and not router.holding and router.unavailable == []
    assert seen == ["emb /v1/embeddings emb", "gen /v1/chat/completions gen"]


def test_policy_replace_keeps_heads_out_of_the_version(tmp_path: Path) -> None:
    policy = load_pack(write_probe_pack(tmp_path))
    assert dataclasses.replace(policy, probe=None).version == policy.version
