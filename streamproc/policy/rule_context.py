"""What rules are evaluated against: an item's fields (streamproc.policy.rule_fields) with
the policy's lists and median prices, the same for listings and videos."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from rule_engine.types import coerce_value  # type: ignore[import-untyped, unused-ignore]

from streamproc.policy.model import Policy
from streamproc.policy.normalise import fold
from streamproc.policy.prompt import item_windows
from streamproc.policy.rule_fields import POST_RULE_FIELDS, RULE_FIELDS
from streamproc.schemas import ContentEvent, Decision, ListingEvent

__all__ = [
    "ItemFields",
    "Lookups",
    "build_context",
    "first_entry",
    "item_text",
    "post_fields",
    "rule_context",
]

_WORDS: Final = re.compile(r"\w+")
#: Characters of ``text`` rules read: past them every character is also past the model's
#: windows, so named in ``clipped_fields``, which the shipped packs escalate.
TEXT_CHARS: Final = 100_000
#: Up to this many list entries, a text is first searched for each entry's longest word.
_MAX_PROBES: Final = 64


@dataclass(frozen=True)
class _Terms:
    """The entries of all lists as lower-case word sequences, for ``text_lists``, indexed by
    first word: an item's text is scanned once for every list, and only where a word starts
    an entry."""

    #: first word → (entry's words, list name)
    starts: dict[str, tuple[tuple[tuple[str, ...], str], ...]]
    #: Entries without letters or digits (emoji, "$$$"), matched as substrings: list name → entries.
    symbols: dict[str, tuple[str, ...]]
    #: List names, in policy order.
    names: tuple[str, ...]
    #: The longest word of each entry, when there are few: a text that contains none of them
    #: as a substring (the usual case) contains no entry, and needs no word scan.
    probes: tuple[str, ...] | None

    @classmethod
    def of(cls, lists: Mapping[str, Sequence[str]]) -> _Terms:
        starts: dict[str, dict[tuple[str, ...], list[str]]] = {}
        symbols: dict[str, tuple[str, ...]] = {}
        for name, entries in lists.items():
            for entry in entries:
                phrase = tuple(_WORDS.findall(fold(entry)))
                if phrase:
                    names = starts.setdefault(phrase[0], {}).setdefault(phrase, [])
                    if name not in names:
                        names.append(name)
            found = tuple(fold(e) for e in entries if e.strip() and not _WORDS.search(e))
            if found:
                symbols[name] = found
        every = [phrase for by_phrase in starts.values() for phrase in by_phrase]
        return cls(
            starts={
                word: tuple((phrase, name) for phrase, names in phrases.items() for name in names)
                for word, phrases in starts.items()
            },
            symbols=symbols,
            names=tuple(lists),
            probes=tuple({max(p, key=len) for p in every}) if len(every) <= _MAX_PROBES else None,
        )

    def occurring(self, text: str) -> list[str]:
        """Names of the lists with an entry in ``text`` (folded), in policy order."""
        found: set[str] = set()
        starts, probes = self.starts, self.probes
        if starts and (probes is None or any(probe in text for probe in probes)):
            words = _WORDS.findall(text)
            if not starts.keys().isdisjoint(words):
                for i, word in enumerate(words):
                    for phrase, name in starts.get(word, ()):
                        if name not in found and tuple(words[i : i + len(phrase)]) == phrase:
                            found.add(name)
        for name, symbols in self.symbols.items():
            if name not in found and any(symbol in text for symbol in symbols):
                found.add(name)
        return [name for name in self.names if name in found] if found else []


def first_entry(entries: Sequence[str], text: str) -> tuple[str, int, int] | None:
    """The entry of a list that occurs first in ``text`` (folded, as the ``text`` field), found
    as ``text_lists`` finds entries: (entry as the list writes it, start, end) of where it
    occurs; None when none does. Scans the whole text: for explaining a match, not the hot path."""
    by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    best: tuple[str, int, int] | None = None
    for entry in entries:
        folded = fold(entry)
        phrase = tuple(_WORDS.findall(folded))
        if phrase:
            by_first.setdefault(phrase[0], []).append((phrase, entry))
        elif entry.strip() and (at := text.find(folded)) >= 0 and (best is None or at < best[1]):
            best = (entry, at, at + len(folded))
    words = list(_WORDS.finditer(text))
    for i, word in enumerate(words):
        if best is not None and word.start() >= best[1]:
            break
        for phrase, entry in by_first.get(word[0], ()):
            if tuple(w[0] for w in words[i : i + len(phrase)]) == phrase:
                return entry, word.start(), words[i + len(phrase) - 1].end()
    return best


@dataclass(frozen=True)
class Lookups:
    """The policy's lists and median prices, indexed once per policy."""

    policy: Policy
    lists: dict[str, tuple[str, ...]]
    members: dict[str, frozenset[str]]
    terms: _Terms | None
    medians: dict[tuple[str, ...], float]

    @classmethod
    def of(cls, policy: Policy, *, text_lists: bool = True) -> Lookups:
        """``text_lists``: whether to index the lists for ``text_lists`` (costly with long lists)."""
        lists = {name: tuple(values) for name, values in policy.lists}
        return cls(
            policy=policy,
            lists=lists,
            members={name: frozenset(values) for name, values in lists.items()},
            terms=_Terms.of(lists) if text_lists else None,
            medians={_path_key(path.split(">")): float(m) for path, m in policy.median_prices},
        )

    @functools.cached_property
    def coerced_lists(self) -> Any:
        """``lists`` as rule-engine holds it: the same for every item, so converted once."""
        return coerce_value(dict(self.lists), verify_type=False)

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
    fields = ItemFields(lookups, event, text_lists=text_lists and lookups.terms is not None)
    if scores is not None or decision is not None:
        fields = fields.with_post(scores or {}, decision)
    return dict(fields)


class ItemFields(Mapping[str, Any]):
    """One item's rule fields, each computed when a rule first reads it and kept for the
    item's other rules and stages: a rule that reads ``owner_lists`` costs no text scan.

    Also holds each value as rule-engine converts it (:meth:`coerced`, for
    :mod:`streamproc.policy.rule_fastpath`).
    """

    __slots__ = ("_coerced", "_event", "_lookups", "_names", "_post", "_post_coerced", "_values")

    def __init__(
        self,
        lookups: Lookups,
        event: ContentEvent,
        *,
        text_lists: bool = True,
        clipped: Sequence[str] | None = None,
    ) -> None:
        """``clipped``: the item's ``clipped_fields`` when the caller has its windows already."""
        self._lookups = lookups
        self._event = event
        self._names = RULE_FIELDS if text_lists else _WITHOUT_TEXT_LISTS
        self._values: dict[str, Any] = {} if clipped is None else {"clipped_fields": list(clipped)}
        self._coerced: dict[str, Any] = {}
        self._post: dict[str, Any] | None = None
        self._post_coerced: dict[str, Any] = {}

    def with_post(self, scores: Mapping[str, float], decision: Decision | None) -> ItemFields:
        """These fields and the post-rule ones; values computed so far are shared."""
        fields = ItemFields.__new__(ItemFields)
        fields._lookups, fields._event = self._lookups, self._event
        fields._names = self._names + POST_RULE_FIELDS
        fields._values, fields._coerced = self._values, self._coerced
        fields._post, fields._post_coerced = post_fields(scores, decision), {}
        return fields

    def __getitem__(self, name: str) -> Any:
        post = self._post
        if post is not None and name in post:
            return post[name]
        values = self._values
        if name in values:
            return values[name]
        if name not in self._names:
            raise KeyError(name)
        if name == "text_lists":
            terms = self._lookups.terms
            value = terms.occurring(self["text"]) if terms is not None else []
        else:
            value = _FIELDS[name](self._lookups, self._event, self)
        values[name] = value
        return value

    def coerced(self, name: str) -> Any:
        """The field as rule-engine holds it once resolved (``Decimal`` numbers, tuples)."""
        cache = self._post_coerced if self._post is not None and name in self._post else self._coerced
        if name in cache:
            return cache[name]
        value = self[name]
        if name == "lists":
            value = self._lookups.coerced_lists
        elif type(value) is not str and value is not None:  # rule-engine keeps those as they are
            value = coerce_value(value, verify_type=False)
        cache[name] = value
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def post_fields(scores: Mapping[str, float], decision: Decision | None) -> dict[str, Any]:
    """The fields only post rules see."""
    score_map = {k: float(v) for k, v in scores.items()}
    return {"scores": score_map, "decision": decision, "max_score": max(score_map.values(), default=0.0)}


# The one place that knows which fields listings and videos fill: each gives all of them,
# those that do not apply empty. Each getter: (lookups, event, the item's fields) → value.
_Getter = Callable[[Lookups, Any, ItemFields], Any]
_COMMON: Final[dict[str, _Getter]] = {
    "content_type": lambda lk, e, f: e.content_type,
    "content_id": lambda lk, e, f: e.content_id,
    "owner_id": lambda lk, e, f: e.owner_id,
    "revision": lambda lk, e, f: e.revision,
    "locale": lambda lk, e, f: e.locale,
    "text": lambda lk, e, f: _text(e),
    "raw_text": lambda lk, e, f: _raw_text(e),
    "clipped_fields": lambda lk, e, f: list(item_windows(lk.policy, e).clipped),
    "category": lambda lk, e, f: " > ".join(f["category_path"]),
    "median_price": lambda lk, e, f: lk.median_price(f["category_path"]),
    "lists": lambda lk, e, f: dict(lk.lists),  # tuples: shared, never copied per item
    "owner_lists": lambda lk, e, f: [n for n, members in lk.members.items() if e.owner_id in members],
}
_LISTING: Final[dict[str, _Getter]] = {
    "title": lambda lk, e, f: e.title,
    "description": lambda lk, e, f: e.description,
    "category_path": lambda lk, e, f: list(e.category_path),
    "price": lambda lk, e, f: float(e.price.amount),
    "currency": lambda lk, e, f: e.price.currency,
    "attributes": lambda lk, e, f: dict(e.attributes),
    "image_count": lambda lk, e, f: len(e.image_urls),
    "caption": lambda lk, e, f: "",
    "transcript": lambda lk, e, f: "",
    "ocr_text": lambda lk, e, f: "",
    "duration_seconds": lambda lk, e, f: None,
    "keyframe_count": lambda lk, e, f: 0,
    "linked_product_count": lambda lk, e, f: 0,
}
_VIDEO: Final[dict[str, _Getter]] = {
    "title": lambda lk, e, f: "",
    "description": lambda lk, e, f: "",
    "category_path": lambda lk, e, f: [],
    "price": lambda lk, e, f: None,
    "currency": lambda lk, e, f: "",
    "attributes": lambda lk, e, f: {},
    "image_count": lambda lk, e, f: 0,
    "caption": lambda lk, e, f: e.caption,
    "transcript": lambda lk, e, f: e.transcript,
    "ocr_text": lambda lk, e, f: e.ocr_text,
    "duration_seconds": lambda lk, e, f: e.duration_seconds,
    "keyframe_count": lambda lk, e, f: len(e.keyframes),
    "linked_product_count": lambda lk, e, f: len(e.linked_product_ids),
}


#: Fields that are one of the item's own texts, read by name from whichever event has them.
_OWN_TEXTS: Final = frozenset({"title", "description", "caption", "transcript", "ocr_text"})


def item_text(event: ContentEvent, name: str) -> str | None:
    """Rule field ``name`` of ``event`` as rules read it, when it is the item's own text
    (``text``, ``raw_text``, ``title``, ``description``, ``caption``, ``transcript``,
    ``ocr_text``): these need no policy, so a verdict's match can be shown in the item it came
    from. None for any other field."""
    if name == "text":
        return _text(event)
    if name == "raw_text":
        return _raw_text(event)
    # A field the other content type has is empty here, as rules see it.
    return str(getattr(event, name, "")) if name in _OWN_TEXTS else None


def _text(event: ContentEvent) -> str:
    return fold("\n".join(t for t in _texts(event) if t), TEXT_CHARS)


def _raw_text(event: ContentEvent) -> str:
    return "\n".join(t for t in _texts(event) if t)


def _texts(event: ContentEvent) -> list[str]:
    """The texts ``text`` joins, in the model's reading order (streamproc.policy.prompt)."""
    if isinstance(event, ListingEvent):
        attributes = (f"{key}: {value}" for key, value in sorted(event.attributes.items()))
        return [event.title, " > ".join(event.category_path), *attributes, event.description]
    return [event.caption, event.transcript, event.ocr_text]


def _by_type(name: str) -> _Getter:
    listing, video = _LISTING[name], _VIDEO[name]
    return lambda lk, e, f: (listing if e.content_type == "listing" else video)(lk, e, f)


_FIELDS: Final[dict[str, _Getter]] = _COMMON | {name: _by_type(name) for name in _LISTING}
_WITHOUT_TEXT_LISTS: Final = tuple(name for name in RULE_FIELDS if name != "text_lists")


def _path_key(parts: Sequence[str]) -> tuple[str, ...]:
    return tuple(p.strip() for p in parts)
