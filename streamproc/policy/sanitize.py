"""Item text that cannot act as prompt structure: chat-template control strings are broken.

A tokenizer turns the text of a special token (``<|im_start|>``, ``<|eot_id|>``, ``</s>``,
``<start_of_turn>``, ...) into that token wherever it occurs in a message, so a listing
title could otherwise open a system turn of its own. Every item text that reaches a prompt
goes through :func:`neutralise`, which inserts one space after the opening character of
each control string: ``<|im_start|>`` becomes ``< |im_start|>``, ``[INST]`` ``[ INST]``,
``</s>`` ``< /s>``. The model still reads the words; no tokenizer matches the token.

Inserting never joins text the way removing can (removing ``<|x|>`` from ``<|eot<|x|>_id|>``
leaves ``<|eot_id|>``), and the pattern matches by lookahead, consuming at most the one
opening character, so overlapping control strings are all broken in the same pass.

Covered, case-insensitively (tokenizers that lower-case match any case):

* every ``<|...|>`` token: ChatML and Qwen (``<|im_start|>``), Llama 3 and 4, GPT-2's
  ``<|endoftext|>``, Phi, Granite, Command R, harmony (``<|channel|>``), and DeepSeek's
  ``<|User|>`` (written with fullwidth bars) once normalised (below): any ``<|`` gets its space;
* tag-like tokens without attributes: ``<s>``, ``</s>``, Gemma's ``<start_of_turn>``,
  ``<think>``, ``<tool_call>``, StarCoder/SmolLM's ``<filename>``, the ``<SYS>`` of Llama
  2's ``<<SYS>>``; also HTML tags such as ``<br>``, which the model reads as well as before;
* bracketed tokens: Llama 2 and Mistral ``[INST]``/``[/INST]``, ``[SYSTEM_PROMPT]``,
  ``[TOOL_CALLS]``, ``[IMG]``; BERT-style ``[SEP]``;
* Llama Guard's section markers (``<BEGIN CONVERSATION>``) and the item delimiters of
  this project's prompts (``<<<ITEM``, ``ITEM>>>``).

Text that is not pure ASCII is NFKC-normalised first: tokenizers with an NFKC normaliser
read ``<|im_start|>`` written with fullwidth characters (U+FF1C, U+FF5C, U+FF1E) as
``<|im_start|>``, and the pattern must see what they see.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

__all__ = ["ITEM_CLOSE", "ITEM_OPEN", "neutralise"]

#: The lines around the item in every prompt; item text can never contain them.
ITEM_OPEN: Final = "<<<ITEM"
ITEM_CLOSE: Final = "ITEM>>>"

# Every branch starts with a literal character, so the scan skips text without one of
# them in C; lookarounds consume nothing more, so overlapping strings all get their space.
_CONTROL: Final = re.compile(
    r"""
      <(?:
          (?=\|)                         # <|im_start|>, <|eot_id|>, <|endoftext|>, <|user|>
        | (?=/?[a-z][\w.-]*>)            # <s>, </s>, <start_of_turn>, <think>, <filename>, <SYS>
        | (?=(?:begin|end)\ [a-z ]+>)    # Llama Guard: <BEGIN CONVERSATION>
        | (?<=<<<)(?=item)               # ITEM_OPEN becomes <<< ITEM
      )
    | \[(?=/?[a-z][a-z_]{2,}\])          # [INST], [/INST], [SYSTEM_PROMPT], [TOOL_CALLS]
    | >(?<=item>)(?=>>)                  # ITEM_CLOSE becomes ITEM> >>
    """,
    re.IGNORECASE | re.VERBOSE,
)


def _space_after(match: re.Match[str]) -> str:
    return match[0] + " "


def neutralise(text: str) -> str:
    """``text`` with every control string broken by one inserted space; the rest unchanged
    (NFKC-normalised when not pure ASCII)."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    # A function, not a "\\g<0> " template: Python parses a template on every call.
    return _CONTROL.sub(_space_after, text)
