"""A tokenizer's control tokens, read from its config files as a model directory holds them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamproc.errors import ConfigError
from streamproc.policy import sanitize
from streamproc.policy.sanitize import Neutraliser
from streamproc.policy.tokenizer_tokens import added_tokens, config_tokens, model_tokens, register_tokenizers


def added(content: str, *, special: bool) -> dict[str, Any]:
    """An added-token entry as ``tokenizer_config.json`` and ``tokenizer.json`` write it."""
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": special,
    }


# Abridged from the shapes of real configs: Qwen marks <tool_call> and <think> not special,
# Gemma leaves [@BOS@] unmarked; runs of spaces, words and "..." are ordinary added text.
CONFIG: dict[str, Any] = {
    "added_tokens_decoder": {
        "151643": added("<|endoftext|>", special=True),
        "151644": added("<|im_start|>", special=True),
        "151657": added("<tool_call>", special=False),
        "151667": added("<think>", special=False),
        "5": added("[@BOS@]", special=False),
        "200": added("    ", special=False),
        "201": added("ing", special=False),
        "202": added("...", special=False),
        "203": added("http://", special=False),
    },
    "additional_special_tokens": ["<|im_start|>", {"content": "]~b]", "special": True}],
    "extra_special_tokens": {"image_token": "<image_soft_token>"},
    "bos_token": None,
    "eos_token": {"__type": "AddedToken", "content": "<seed:eos>", "special": True},
    "pad_token": "<|endoftext|>",
    "unk_token": "PI:URL",  # named special: kept although word-like
    "chat_template": "{{ messages }}",
}
EXPECTED = {
    "<|endoftext|>",
    "<|im_start|>",
    "<tool_call>",
    "<think>",
    "[@BOS@]",
    "]~b]",
    "<image_soft_token>",
    "<seed:eos>",
    "PI:URL",
}


def test_config_tokens_are_the_special_the_named_and_the_bracketed() -> None:
    assert config_tokens(CONFIG) == EXPECTED


def test_config_tokens_read_vllms_tokenizer_info() -> None:
    # /tokenizer_info sends added tokens as bare strings: the special flag is lost, the shape is not.
    info = {"added_tokens_decoder": {"1": "<seed:bos>", "2": "    ", "3": "ing"}, "eos_token": "</s>"}
    assert config_tokens(info) == {"<seed:bos>", "</s>"}


def test_added_tokens_of_a_tokenizer_json() -> None:
    tokenizer = {
        "added_tokens": [{"id": 0, **added("<|im_end|>", special=True)}, added("ing", special=False)]
    }
    assert added_tokens(tokenizer) == {"<|im_end|>"}
    assert added_tokens({"model": {}}) == frozenset()


def test_model_tokens_read_every_tokenizer_file_there(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(CONFIG), "utf-8")
    (tmp_path / "tokenizer.json").write_text(
        json.dumps({"added_tokens": [added("@@X@@", special=True)]}), "utf-8"
    )
    tokens = model_tokens(tmp_path)
    assert tokens == EXPECTED | {"@@X@@"}
    assert Neutraliser(tokens).tokens == {"@@X@@", "PI:URL"}  # the rest have known shapes


def test_model_tokens_need_a_tokenizer_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}", "utf-8")
    with pytest.raises(ConfigError, match=r"no tokenizer_config\.json or tokenizer\.json"):
        model_tokens(tmp_path)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\udcff"])
def test_an_unreadable_tokenizer_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "tokenizer.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigError, match=r"tokenizer\.json"):
        model_tokens(tmp_path)


def test_registered_tokenizers_reach_neutralise_and_a_bad_directory_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sanitize, "_DEFAULT", Neutraliser())  # this test's registrations stay here
    model = tmp_path / "model"
    model.mkdir()
    (model / "tokenizer_config.json").write_text(
        json.dumps({"added_tokens_decoder": {"9": added("%%TURN%%", special=True)}})
    )
    assert sanitize.neutralise("a %%TURN%% b") == "a %%TURN%% b"  # no known shape
    register_tokenizers([model])
    assert "%%TURN%%" not in sanitize.neutralise("a %%TURN%% b")
    with pytest.raises(ConfigError, match=r"^STREAMPROC_POLICY__TOKENIZER_DIRS: .*no tokenizer_config"):
        register_tokenizers([tmp_path / "empty"])
