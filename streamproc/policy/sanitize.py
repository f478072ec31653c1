"""Item text that cannot act as prompt structure: chat-template control strings are broken.

A tokenizer turns the text of a special token (``<|im_start|>``, ``<|eot_id|>``, ``</s>``,
``<start_of_turn>``, ...) into that token wherever it occurs in a message, so a listing
title could otherwise open a system turn of its own. Every item text that reaches a prompt
goes through :func:`neutralise`, which inserts one space after the opening character of
each control string: ``<|im_start|>`` becomes ``< |im_start|>``, ``[INST]`` ``[ INST]``,
``</s>`` ``< /s>``. The model still reads the words; no tokenizer matches the token.

Inserting never joins text the way removing can (removing ``<|x|>`` from ``<|eot<|x|>_id|>``
leaves ``<|eot_id|>``), and the pattern matches by lookaround, consuming exactly the one
character the space follows, so overlapping control strings are all broken in the same pass.

Covered by shape, case-insensitively (tokenizers that lower-case match any case):

* every ``<|...|>`` token: ChatML and Qwen (``<|im_start|>``), Llama 3 and 4, GPT-2's
  ``<|endoftext|>``, Phi, Granite, Command R, harmony (``<|channel|>``), and DeepSeek's
  ``<|User|>`` (written with fullwidth bars) once normalised (below): any ``<|`` gets its space;
* tag-like tokens without attributes: ``<s>``, ``</s>``, Gemma's ``<start_of_turn>``,
  ``<start_of_image>``, ``<image_soft_token>`` and ``<2mass>``, ``<think>``, ``<tool_call>``,
  StarCoder/SmolLM's ``<filename>``, the ``<SYS>`` of Llama 2's ``<<SYS>>``, and namespaced
  ones: Seed-OSS's ``<seed:bos>``, MiniMax's ``<minimax:tool_call>``; also HTML tags such as
  ``<br>``, which the model reads as well as before;
* bracketed tokens: Llama 2 and Mistral ``[INST]``/``[/INST]``, ``[SYSTEM_PROMPT]``,
  ``[TOOL_CALLS]``, ``[IMG_BREAK]``, Mistral v3's ``[control_12]``; Kimi's ``[EOS]``; BERT's
  ``[SEP]``; EXAONE's ``[|endofturn|]``; Gemma's ``[@BOS@]``;
* MiniMax's ``]~b]``, ``]~!b[``, ``[e~[``, ``]!p~[`` and ``]<]image[>[``; Falcon's
  ``>>TITLE<<`` family; OLMo's ``|||IP_ADDRESS|||`` family; GLM's ``/nothink``;
* Llama Guard's section markers (``<BEGIN CONVERSATION>``) and the item delimiters of
  this project's prompts (``<<<ITEM``, ``ITEM>>>``), also when spelt with look-alike letters
  or brackets (Greek capitals, angle quotes), which a model may read as the delimiter.

Beyond the shapes, a :class:`Neutraliser` breaks given literal strings, such as every
control token of the served model's tokenizer (:mod:`streamproc.policy.tokenizer_tokens`);
:func:`register_special_tokens` adds them to what :func:`neutralise` breaks in this process.

Text that is not pure ASCII is NFKC-normalised first: tokenizers with an NFKC normaliser
read ``<|im_start|>`` written with fullwidth characters (U+FF1C, U+FF5C, U+FF1E) as
``<|im_start|>``, and the pattern must see what they see.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Final

__all__ = ["ITEM_CLOSE", "ITEM_OPEN", "Neutraliser", "neutralise", "register_special_tokens"]

#: The lines around the item in every prompt; item text can never contain them.
ITEM_OPEN: Final = "<<<ITEM"
ITEM_CLOSE: Final = "ITEM>>>"

_FLAGS: Final = re.IGNORECASE | re.VERBOSE
# Every branch starts with a literal character, so the scan skips text without one of
# them in C; each consumes exactly that character, so overlapping strings all get their space.
# A lookahead reads at most a bounded span or one run of name characters, which ends before
# the next opening character: the scan stays linear in the text.
_SHAPES: Final = r"""
      <(?:
          (?=\|)                            # <|im_start|>, <|eot_id|>, <|endoftext|>, <|user|>
        | (?=/?[a-z0-9][\w.:-]*>)           # <s>, </s>, <start_of_turn>, <SYS>, <seed:bos>, <2mass>
        | (?=(?:begin|end)\ [a-z ]+>)       # Llama Guard: <BEGIN CONVERSATION>
        | (?<=<<<)(?=item)                  # ITEM_OPEN becomes <<< ITEM
      )
    | \[(?=/?[a-z]\w{2,}\]|[|@])            # [INST], [control_12], EXAONE [|user|], Gemma [@BOS@]
    | \[(?=e~\[)                            # MiniMax: [e~[
    | \](?=~!?b[\[\]]|![a-z]~\[|<\][^\[\]]{1,40}\[>\[)  # MiniMax: ]~b], ]~!b[, ]!p~[, ]<]image[>[
    | >(?:(?<=item>)(?=>>)|(?=>[a-z]\w{0,40}<<))        # ITEM_CLOSE becomes ITEM> >>; Falcon >>TITLE<<
    | \|(?=\|\|[a-z]\w{0,40}\|\|\|)         # OLMo: |||IP_ADDRESS|||
    | /(?=nothink)                          # GLM: /nothink
"""
_CONTROL: Final = re.compile(_SHAPES, _FLAGS)

# The delimiters spelt with characters that look like theirs and that NFKC leaves alone,
# which a model may read as them: Greek, Cyrillic and small-capital letters; angle quotes,
# arrowheads, Canadian syllabics, CJK, mathematical and ornament angle brackets. Non-ASCII
# text only, in a pass of its own: sets of non-ASCII characters under IGNORECASE would cost
# the main pattern its fast scan.
_LT: Final = "[<\u2039\u02c2\u1438\u3008\u27e8\u276e\u276c]"
_GT: Final = "[>\u203a\u02c3\u1433\u3009\u27e9\u276f\u276d]"
_ITEM: Final = (
    "[iI\u0399\u03b9\u0406\u0456\u04c0\u04cf\u026a][tT\u03a4\u03c4\u0422\u0442\u1d1b]"
    "[eE\u0395\u03b5\u0415\u0435\u1d07][mM\u039c\u03bc\u041c\u043c\u1d0d]"
)
# One set first (not a branch per bracket): what lets the scan skip text in C.
_LOOKALIKE_DELIMITERS: Final = re.compile(
    f"[{_LT[1:-1]}{_GT[1:-1]}]"
    f"(?:(?<={_LT}{{3}})(?={_ITEM})"  # <<<ITEM becomes <<< ITEM
    f"|(?<={_ITEM}{_GT})(?={_GT}{{2}}))"  # ITEM>>> becomes ITEM> >>
)


def _space_after(match: re.Match[str]) -> str:
    return match[0] + " "


def _contains(text: str, token: str) -> bool:
    return re.search(re.escape(token), text, re.IGNORECASE) is not None


def _break_at(token: str) -> int | None:
    """The index of the character after which one space breaks ``token``: the first one that
    is followed by another non-space (a space beside a space could rejoin a run of them);
    None where no space does."""
    for k in range(len(token) - 1):
        if token[k].isspace() or token[k + 1].isspace():
            continue
        if not _contains(token[: k + 1] + " " + token[k + 1 :], token):
            return k
    return None


def _branches(cuts: dict[str, int]) -> str:
    """Pattern branches for literal tokens, each consuming the character its space follows.
    Tokens with the same first character share a branch, so a character that starts none of
    them costs one test; a token whose space follows a later character (after leading spaces)
    gets a lookbehind on its head, which keeps its branch starting with a literal too."""
    # Longest first, then alphabetical: the same tokens always compile to the same pattern.
    ordered = sorted(cuts, key=lambda t: (-len(t), t))
    by_first: dict[str, list[str]] = {}
    branches = []
    for token in ordered:
        k = cuts[token]
        if k:
            behind = f"(?<={re.escape(token[: k + 1])})"
            branches.append(f"{re.escape(token[k])}{behind}(?={re.escape(token[k + 1 :])})")
        else:
            by_first.setdefault(token[0].lower(), []).append(token)
    for tokens in by_first.values():
        rests = "|".join(re.escape(t[1:]) for t in tokens)
        branches.append(f"{re.escape(tokens[0][0])}(?={rests})")
    return "".join(f"\n    | {branch}" for branch in branches)


class Neutraliser:
    """Breaks the control strings of the known shapes and, beyond them, literal ``tokens``
    (a tokenizer's own control tokens): a space after the first character of each, matched
    case-insensitively in NFKC, all in one compiled pattern."""

    __slots__ = ("_state",)

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        # One attribute, replaced whole, so a concurrent call sees the old or the new state:
        # each extra token with the index its space follows, and the compiled pattern.
        self._state: tuple[dict[str, int], re.Pattern[str]] = ({}, _CONTROL)
        self.add(tokens)

    @property
    def tokens(self) -> frozenset[str]:
        """The literal tokens broken beyond the shapes, in NFKC (those the shapes already
        break, and those no space can break, are left out)."""
        return frozenset(self._state[0])

    def add(self, tokens: Iterable[str]) -> None:
        """Also break ``tokens`` from now on."""
        known = self._state[0]
        fresh = {unicodedata.normalize("NFKC", t) for t in tokens}.difference(known)
        cuts = {t: k for t in fresh if not _covered(t) and (k := _break_at(t)) is not None}
        if not cuts:
            return
        every = known | cuts
        self._state = (every, re.compile(_SHAPES + _branches(every), _FLAGS))

    def __call__(self, text: str) -> str:
        """``text`` with every control string broken by one inserted space; the rest
        unchanged (NFKC-normalised when not pure ASCII)."""
        if not text.isascii():
            text = _LOOKALIKE_DELIMITERS.sub(_space_after, unicodedata.normalize("NFKC", text))
        # A function, not a "\\g<0> " template: Python parses a template on every call.
        return self._state[1].sub(_space_after, text)


def _covered(token: str) -> bool:
    """Whether the shapes alone break ``token`` wherever it occurs: a match inside the token
    on its own is a match in any text around it, since lookarounds only read the token."""
    broken = _CONTROL.sub(_space_after, _LOOKALIKE_DELIMITERS.sub(_space_after, token))
    return not _contains(broken, token)


_DEFAULT: Final = Neutraliser()


def neutralise(text: str) -> str:
    """``text`` with every control string broken by one inserted space; the rest unchanged
    (NFKC-normalised when not pure ASCII). Breaks the known shapes and the tokens given to
    :func:`register_special_tokens`."""
    return _DEFAULT(text)


def register_special_tokens(tokens: Iterable[str]) -> None:
    """Make :func:`neutralise` also break ``tokens`` in this process, from now on: call it at
    start, once the served model's tokenizer is known (repeated calls add up)."""
    _DEFAULT.add(tokens)
