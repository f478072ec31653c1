"""The control tokens of a model's tokenizer, read from its files, for the neutraliser
(:func:`streamproc.policy.sanitize.register_special_tokens`).

A Hugging Face tokenizer splits every *added* token out of the text before anything else,
special or not, so an item that spells one gets its id. Kept:

* every added token marked special (``added_tokens_decoder`` in ``tokenizer_config.json``,
  ``added_tokens`` in ``tokenizer.json``) and every token the config names: ``bos_token``,
  ``eos_token``, ``unk_token``, ``sep_token``, ``pad_token``, ``cls_token``, ``mask_token``,
  ``additional_special_tokens``, ``extra_special_tokens``;
* added tokens not marked special that are bracketed like a control token (a symbol at both
  ends, a letter inside): checkpoints leave real control tokens unmarked (Qwen's
  ``<tool_call>`` and ``<think>``, Gemma's ``[@BOS@]``). Other unmarked added tokens (runs of
  spaces, words, ``...``) are ordinary text and stay as they are.

:func:`config_tokens` also reads what vLLM's ``/tokenizer_info`` returns (served with
``--enable-tokenizer-info-endpoint``): the same keys, with added tokens as bare strings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from streamproc.errors import ConfigError
from streamproc.policy.sanitize import register_special_tokens

__all__ = ["added_tokens", "config_tokens", "model_tokens", "register_tokenizers"]

_NAMED: Final = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
    "additional_special_tokens",
    "extra_special_tokens",
)


def _bracketed(token: str) -> bool:
    """Shaped like a control token: a symbol (no letter, digit or space) at both ends and a
    letter inside, like ``<tool_call>``, ``[@BOS@]`` or ``]~b]``."""

    def symbol(char: str) -> bool:
        return not (char.isalnum() or char.isspace())

    return len(token) > 2 and symbol(token[0]) and symbol(token[-1]) and any(c.isalpha() for c in token)


def _contents(value: object, *, named: bool) -> Iterator[str]:
    """The control tokens in a config value: a string, a serialised ``AddedToken`` (a dict
    with ``content``), or a list or name-to-token dict of them. ``named``: the config names
    the value as special, so every token in it counts, marked or not."""
    if isinstance(value, str):
        if named or _bracketed(value):
            yield value
    elif isinstance(value, Mapping):
        content = value.get("content")
        if isinstance(content, str):
            if named or value.get("special") is True or _bracketed(content):
                yield content
        else:  # extra_special_tokens: {"image_token": "<image_soft_token>", ...}
            for item in value.values():
                yield from _contents(item, named=named)
    elif isinstance(value, list):
        for item in value:
            yield from _contents(item, named=named)


def config_tokens(config: Mapping[str, Any]) -> frozenset[str]:
    """The control tokens a ``tokenizer_config.json`` (or ``special_tokens_map.json``, or
    vLLM's ``/tokenizer_info`` answer) declares."""
    tokens = {t for name in _NAMED for t in _contents(config.get(name), named=True)}
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, Mapping):  # {"151644": {"content": "<|im_start|>", "special": true, ...}}
        tokens.update(_contents(list(decoder.values()), named=False))
    return frozenset(tokens)


def added_tokens(tokenizer: Mapping[str, Any]) -> frozenset[str]:
    """The control tokens among a ``tokenizer.json``'s ``added_tokens``."""
    return frozenset(_contents(tokenizer.get("added_tokens"), named=False))


_FILES: Final = (
    ("tokenizer_config.json", config_tokens),
    ("special_tokens_map.json", config_tokens),
    ("tokenizer.json", added_tokens),
)


def model_tokens(model_dir: Path) -> frozenset[str]:
    """The control tokens of the tokenizer in a model directory, from whichever of its
    ``tokenizer_config.json``, ``special_tokens_map.json`` and ``tokenizer.json`` exist
    (recent transformers write the added tokens to ``tokenizer.json`` only).

    Raises:
        ConfigError: none of them exists, or one is not a JSON object.
    """
    tokens: set[str] = set()
    found = False
    for name, read in _FILES:
        path = model_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: bad UTF-8 or bad JSON
            raise ConfigError(f"cannot read the tokenizer file {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} is not a tokenizer file (not a JSON object)")
        tokens |= read(data)
        found = True
    if not found:
        raise ConfigError(
            f"{model_dir} has no tokenizer_config.json or tokenizer.json: give the served model's directory"
        )
    return frozenset(tokens)


def register_tokenizers(model_dirs: Iterable[Path]) -> None:
    """Make this process's neutraliser break the control tokens of these model directories'
    tokenizers too (``STREAMPROC_POLICY__TOKENIZER_DIRS``); call it at start.

    Raises:
        ConfigError: a directory has no readable tokenizer file; the message names the setting.
    """
    for model_dir in model_dirs:
        try:
            register_special_tokens(model_tokens(model_dir))
        except ConfigError as exc:
            raise ConfigError(f"STREAMPROC_POLICY__TOKENIZER_DIRS: {exc}") from None
