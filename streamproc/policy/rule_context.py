"""What rules are evaluated against: an item's fields (streamproc.policy.rule_fields) with
the policy's lists and median prices, the same for listings and videos."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from streamproc.policy.model import Policy
from streamproc.policy.rule_fields import RULE_FIELDS
from streamproc.schemas import ContentEvent, Decision, ListingEvent, VideoEvent

__all__ = ["Lookups", "build_context", "post_fields", "rule_context"]

_WORDS: Final = re.compile(r"\w+")


@dataclass(frozen=True)
class _Terms:
    """One list's entries as lower-case word sequences, for ``text_lists``."""

    phrases: frozenset[tuple[str, ...]]
    lengths: tuple[int, ...]
    #: Entries without letters or digits (emoji, "$$$"): matched as substrings.
    symbols: tuple[str, ...]

    @classmethod
    def of(cls, entries: Sequence[str]) -> _Terms:
        phrases = {tuple(_WORDS.findall(e.lower())) for e in entries}
        symbols = tuple(e.lower() for e in entries if e.strip() and not _WORDS.search(e))
        phrases.discard(())
        return cls(frozenset(phrases), tuple(sorted({len(p) for p in phrases})), symbols)

    def occur_in(self, ngrams: frozenset[tuple[str, ...]], text: str) -> bool:
        """``ngrams``: the text's word n-grams of (at least) this list's lengths."""
        return not self.phrases.isdisjoint(ngrams) or any(symbol in text for symbol in self.symbols)


def _ngrams(words: Sequence[str], lengths: Iterable[int]) -> frozenset[tuple[str, ...]]:
    """Every run of ``n`` consecutive words, for each n: built once per item, for all lists."""
    return frozenset(tuple(words[i : i + n]) for n in lengths for i in range(len(words) - n + 1))


@dataclass(frozen=True)
class Lookups:
    """The policy's lists and median prices, indexed once per policy."""

    lists: dict[str, tuple[str, ...]]
    members: dict[str, frozenset[str]]
    terms: dict[str, _Terms]
    medians: dict[tuple[str, ...], float]

    @classmethod
    def of(cls, policy: Policy, *, text_lists: bool = True) -> Lookups:
        """``text_lists``: whether to index the lists for ``text_lists`` (costly with long lists)."""
        lists = {name: tuple(values) for name, values in policy.lists}
        return cls(
            lists=lists,
            members={name: frozenset(values) for name, values in lists.items()},
            terms={name: _Terms.of(values) for name, values in lists.items()} if text_lists else {},
            medians={_path_key(path.split(">")): float(m) for path, m in policy.median_prices},
        )

    @functools.cached_property
    def ngram_lengths(self) -> frozenset[int]:
        return frozenset(n for terms in self.terms.values() for n in terms.lengths)

    def median_price(self, category_path: Sequence[str]) -> float | None:
        key = _path_key(category_path)
        for end in range(len(key), 0, -1):  # longest prefix first
            median = self.medians.get(key[:end])
            if median is not None:
                return median
        return None


def rule_context(
    policy: Policy,
    event: ContentEvent,
    scores: Mapping[str, float] | None = None,
    decision: Decision | None = None,
) -> dict[str, Any]:
    """The fields rules are evaluated against (see streamproc.policy.rule_fields).

    Args:
        policy: Gives ``lists`` and ``median_price``.
        event: The listing or video.
        scores: Post stage: score per category id.
        decision: Post stage: the decision the thresholds gave.

    Returns:
        :data:`RULE_FIELDS`, plus :data:`POST_RULE_FIELDS` when ``scores`` or ``decision``
        is given.
    """
    return build_context(Lookups.of(policy), event, scores, decision)


def build_context(
    lookups: Lookups,
    event: ContentEvent,
    scores: Mapping[str, float] | None = None,
    decision: Decision | None = None,
    *,
    text_lists: bool = True,
) -> dict[str, Any]:
    """:func:`rule_context` with the policy's lookups built already; ``text_lists=False``
    leaves that field out (it scans the text, and no rule may read it)."""
    own, texts = _listing_fields(event) if event.content_type == "listing" else _video_fields(event)
    path: list[str] = own["category_path"]
    text = "\n".join(t for t in texts if t).lower()
    fields = own | {
        "content_type": event.content_type,
        "content_id": event.content_id,
        "owner_id": event.owner_id,
        "revision": event.revision,
        "locale": event.locale,
        "text": text,
        "category": " > ".join(path),
        "median_price": lookups.median_price(path),
        "lists": dict(lookups.lists),  # tuples: shared, never copied per item
        "owner_lists": [name for name, members in lookups.members.items() if event.owner_id in members],
    }
    if text_lists:
        ngrams = _ngrams(_WORDS.findall(text), lookups.ngram_lengths)
        fields["text_lists"] = [name for name, terms in lookups.terms.items() if terms.occur_in(ngrams, text)]
    context = {name: fields[name] for name in RULE_FIELDS if name in fields}
    if scores is not None or decision is not None:
        context |= post_fields(scores or {}, decision)
    return context


def post_fields(scores: Mapping[str, float], decision: Decision | None) -> dict[str, Any]:
    """The fields only post rules see."""
    score_map = {k: float(v) for k, v in scores.items()}
    return {"scores": score_map, "decision": decision, "max_score": max(score_map.values(), default=0.0)}


# The one place that knows which fields listings and videos fill: each gives all of them,
# those that do not apply empty, and its texts (in the order ``text`` joins them).
def _listing_fields(event: ListingEvent) -> tuple[dict[str, Any], list[str]]:
    fields: dict[str, Any] = {
        "title": event.title,
        "description": event.description,
        "category_path": list(event.category_path),
        "price": float(event.price.amount),
        "currency": event.price.currency,
        "attributes": dict(event.attributes),
        "image_count": len(event.image_urls),
        "caption": "",
        "transcript": "",
        "ocr_text": "",
        "duration_seconds": None,
        "keyframe_count": 0,
        "linked_product_count": 0,
    }
    return fields, [event.title, event.description, *event.attributes.values()]


def _video_fields(event: VideoEvent) -> tuple[dict[str, Any], list[str]]:
    fields: dict[str, Any] = {
        "title": "",
        "description": "",
        "category_path": [],
        "price": None,
        "currency": "",
        "attributes": {},
        "image_count": 0,
        "caption": event.caption,
        "transcript": event.transcript,
        "ocr_text": event.ocr_text,
        "duration_seconds": event.duration_seconds,
        "keyframe_count": len(event.keyframes),
        "linked_product_count": len(event.linked_product_ids),
    }
    return fields, [event.caption, event.transcript, event.ocr_text]


def _path_key(parts: Sequence[str]) -> tuple[str, ...]:
    return tuple(p.strip() for p in parts)
