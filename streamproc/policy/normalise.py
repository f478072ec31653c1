"""Item text as rules and the model read it: one normalisation for both, so a disguise that
the model sees through cannot slip past a rule.

* :func:`normalise` (what the model reads): NFKC, so "whatsapp" in fullwidth letters and the
  ligature U+FB01 read as ``whatsapp`` and ``fi``; and default-ignorable characters removed
  (zero-width spaces and joiners, soft hyphens, bidi controls, variation selectors, tag
  characters), which a reader never sees but which split a word for a pattern.
* :func:`fold` (what rules match): :func:`normalise`, lower-cased, with letters that look like
  Latin letters or digits (Cyrillic a U+0430, Greek omicron, Latin alpha U+0251) replaced by them, from
  Unicode's confusables table. The model keeps the real letters; folding is for matching.

Both take a ``limit``: NFKC can lengthen text 18-fold (U+FDFA), so bounded callers normalise
only as much of the text as they can use, in slices, never the whole of a hostile field.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Final

from confusable_homoglyphs.utils import load as _load_confusables  # type: ignore[import-untyped]

__all__ = ["fold", "normalise"]

#: Unicode's Default_Ignorable_Code_Point set (DerivedCoreProperties), less the Hangul fillers
#: that NFKC already maps: invisible when rendered, so removing them changes nothing a person reads.
_IGNORABLE: Final = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)
#: Raw characters normalised at a time when a ``limit`` applies: NFKC of a slice costs at most
#: 18 times its length, and a limit is reached after few slices.
_SLICE: Final = 4_096
#: Characters kept past the limit for the last pass: a composition reaches back only a few.
_MARGIN: Final = 32


def normalise(text: str, limit: int | None = None) -> str:
    """``text`` in NFKC without default-ignorable characters; at most ``limit`` characters of
    it when a limit is given (the rest of a long text is never normalised)."""
    if text.isascii():  # the usual case: nothing to compose, nothing invisible
        return text if limit is None else text[:limit]
    if limit is None:
        return _IGNORABLE.sub("", unicodedata.normalize("NFKC", text))
    out: list[str] = []
    size, step = 0, min(_SLICE, limit + 1)
    for start in range(0, len(text), step):
        piece = _IGNORABLE.sub("", unicodedata.normalize("NFKC", text[start : start + step]))
        out.append(piece)
        size += len(piece)
        if size > limit:
            break
    # Once more over what is kept: a character composed across two slices composes here.
    return unicodedata.normalize("NFKC", "".join(out)[: limit + _MARGIN])[:limit]


def fold(text: str, limit: int | None = None) -> str:
    """:func:`normalise`, lower-cased, with look-alike letters folded to Latin ones: two texts
    that read the same fold the same."""
    text = normalise(text, limit)
    # Folded before lower-casing: capital Greek eta looks like "H", its small letter like "n".
    return (text if text.isascii() else text.translate(_look_alikes())).lower()


@functools.cache
def _look_alikes() -> dict[int, str]:
    """Each non-ASCII character that Unicode lists as confusable with one ASCII letter or digit
    → that letter (lower case); loaded once, on first use (about 1,300 characters)."""
    table: dict[int, str] = {}
    for char, glyphs in _load_confusables("confusables.json").items():
        if len(char) != 1 or char.isascii():
            continue
        for glyph in glyphs:
            look = glyph["c"]
            if len(look) == 1 and look.isascii() and look.isalnum():
                table[ord(char)] = look.lower()
                break
    return table
