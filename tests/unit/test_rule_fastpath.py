"""The closures rules run as on the hot path give what rule-engine gives: the same match, the
same failures, the same messages, for every expression form and every kind of item."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from load.workload import WorkloadMix, make_events
from streamproc.policy import Policy, Rule
from streamproc.policy.rule_context import ItemFields, rule_context
from streamproc.policy.rules import CompiledRules
from streamproc.schemas import ContentEvent, decode_event
from tests.factories import default_policy, listing, shipped_policies, video

LISTS = (
    ("banned_sellers", ("S-666", "S-1")),
    ("blocked_terms", ("Replica", "mirror quality", "💊", "rolex")),
)
MEDIANS = (("Fashion > Watches", 2000.0), ("Fashion", 50.0), ("Health", 12.5))

# Every node kind the closures translate, the ways each can fail, and forms left to rule-engine.
EXPRESSIONS = (
    "'banned_sellers' in owner_lists",
    "'blocked_terms' in text_lists",
    "not ('blocked_terms' in text_lists) and image_count >= 1",
    "owner_id in lists['banned_sellers']",
    "'rolex' in text or 'pills' in title",
    "text =~~ '\\\\b(replica|mirror quality)\\\\b'",
    "text =~ 'rolex'",
    "title !~ 'R' and description !~~ 'x'",
    "attributes&['brand'] != null and median_price != null and price < median_price * 0.2",
    "price < median_price * 0.2",  # null median or price: an error
    "price / 0 > 1",  # division by zero
    "price * 3 >= 750 or price ** 2 < 1 or price // 7 == 35 or price % 2 == 0.5",
    "attributes['brand'] == 'Rolex'",  # a missing key: an error
    "attributes&['first_listing'] == 'true' and category_path&[0] == 'Health'",
    "category_path[0] == 'Fashion'",  # an empty path: an error
    "category == 'Fashion > Watches' and currency != 'USD'",
    "duration_seconds > 20 and keyframe_count > 0",  # null for listings: an error
    "content_type == 'video' or linked_product_count == 2",
    "revision == 3 and locale == 'en-GB'",
    "revision == '3' or keyframe_count == true",  # different types are never equal (1 == true in Python)
    "attributes&['brand'] =~ 'Ro'",  # null never matches
    "attributes&['brand'] !~~ 'x'",
    "content_id =~ 'L-' and owner_id != 'S-2'",
    "$any([term in text for term in lists['blocked_terms']])",  # left to rule-engine
    "text_lists == ['blocked_terms'] or owner_lists == []",
    "lists['blocked_terms'][0] == 'Replica' and attributes&['none'] == null",
)
POST_EXPRESSIONS = (
    "decision == 'approve' and max_score > 0.3",
    "scores['spam'] > 0.3",  # a missing score: an error
    "scores&['counterfeit'] >= 0.5 or decision =~ 'rev'",
)


def _policy(*whens: str, stage: str = "pre") -> Policy:
    rules = tuple(
        Rule(id=f"r{i}", stage=stage, when=w, decision="reject", reason_code="R", seller_message="no")  # type: ignore[arg-type]
        for i, w in enumerate(whens)
    )
    return dataclasses.replace(default_policy("listing"), rules=rules, lists=LISTS, median_prices=MEDIANS)


def _items() -> list[ContentEvent]:
    generated = [
        decode_event(e.content_type, e.value)  # type: ignore[arg-type]
        for e in make_events(300, seed=3, mix=WorkloadMix(risky_share=0.3))
    ]
    return [
        *generated,
        listing(),
        listing(
            title="Rolex WATCH replica",
            attributes={"brand": "Rolex", "first_listing": "true"},
            category_path=["Fashion", "Watches", "Luxury"],
            price={"amount": "250.50", "currency": "EUR"},
        ),
        listing(
            seller_id="S-666", title="pills💊", category_path=[], price={"amount": "0", "currency": "EUR"}
        ),
        listing(category_path=["Health", "Tea"], attributes={"first_listing": "true"}, revision=3),
        video(caption="Mirror-Quality bags", linked_product_ids=["L-1", "L-2"]),
        video(creator_id="S-1", transcript=""),
    ]


def _one_rule_each(expressions: tuple[str, ...], stage: str = "pre") -> list[CompiledRules]:
    return [CompiledRules.compile(_policy(e, stage=stage)) for e in expressions]


def _fast_rules(rules: CompiledRules) -> list[Any]:
    return [c.fast for c in rules._pre + rules._post]


def test_the_shipped_rules_all_run_as_closures() -> None:
    policies = shipped_policies()
    for pack in policies.policies:
        assert all(fast is not None for fast in _fast_rules(policies.rules(pack))), pack.name


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_pre_rules_match_and_fail_as_rule_engine_says(expression: str) -> None:
    rules = CompiledRules.compile(_policy(expression))
    policy = _policy(expression)
    (closure,) = _fast_rules(rules)
    for item in _items():
        fast = rules.evaluate_pre(item)  # ItemFields: the closures
        slow = rules.evaluate_pre(item, context=rule_context(policy, item))  # a dict: rule-engine
        assert fast == slow, (expression, item)
        if closure is not None and not slow.errors:  # the closure itself decided, without help
            assert closure(rules.context(item)) == (slow.hit is not None), (expression, item)


@pytest.mark.parametrize("expression", POST_EXPRESSIONS)
@pytest.mark.parametrize("decision", ["approve", "review"])
def test_post_rules_match_and_fail_as_rule_engine_says(expression: str, decision: str) -> None:
    rules = CompiledRules.compile(_policy(expression, stage="post"))
    policy = _policy(expression, stage="post")
    for scores in ({}, {"counterfeit": 0.5, "spam": 0.25}, {"spam": 0.75}):
        for item in _items()[-6:]:
            context = rules.context(item)
            fast = rules.evaluate_post(item, scores, decision, context=context)  # type: ignore[arg-type]
            plain = dict(rule_context(policy, item))
            slow = rules.evaluate_post(item, scores, decision, context=plain)  # type: ignore[arg-type]
            assert fast == slow, (expression, scores, item)
            (closure,) = _fast_rules(rules)
            if not slow.errors:
                assert isinstance(context, ItemFields)
                post_fields = context.with_post(scores, decision)  # type: ignore[arg-type]
                assert closure(post_fields) == (slow.hit is not None), (expression, scores, item)


def test_the_shipped_packs_decide_every_item_as_rule_engine_does() -> None:
    policies = shipped_policies()
    for item in _items():
        pack = policies.select(item)
        rules = policies.rules(pack)
        plain = rule_context(pack, item)
        assert rules.evaluate_pre(item) == rules.evaluate_pre(item, context=plain)
        assert rules.evaluate_post(item, {"counterfeit": 0.1}, "approve") == rules.evaluate_post(
            item, {"counterfeit": 0.1}, "approve", context=plain
        )


def test_fields_are_computed_once_and_only_when_read() -> None:
    rules = CompiledRules.compile(_policy("'banned_sellers' in owner_lists"))
    fields = rules.context(listing(seller_id="S-666"))
    assert isinstance(fields, ItemFields)
    assert rules.evaluate_pre(listing(seller_id="S-666"), context=fields).hit is not None
    assert set(fields._values) == {"owner_lists"}  # no text built, no lists scanned for it
    assert fields["text"] == fields["text"] and set(fields._values) == {"owner_lists", "text"}


def _text_lists_by_ngrams(lists: tuple[tuple[str, tuple[str, ...]], ...], text: str) -> list[str]:
    """The definition: an entry's words occur consecutively among the text's words, or an
    entry without letters or digits occurs anywhere."""
    words = re.findall(r"\w+", text)
    ngrams = {tuple(words[i : i + n]) for n in range(1, 6) for i in range(len(words) - n + 1)}
    found = []
    for name, entries in lists:
        phrases = {tuple(re.findall(r"\w+", e.lower())) for e in entries} - {()}
        symbols = [e.lower() for e in entries if e.strip() and not re.search(r"\w", e)]
        if phrases & ngrams or any(s in text for s in symbols):
            found.append(name)
    return found


@pytest.mark.parametrize("extra_entries", [0, 80])  # few entries: probed first; many: scanned
def test_text_lists_are_the_lists_whose_entries_occur_as_words(extra_entries: int) -> None:
    filler = tuple(f"filler term {i}" for i in range(extra_entries))
    lists = (*LISTS, ("long", ("aaa grade", "ass", *filler)), ("symbols", ("$$$", "🔥")))
    policy = dataclasses.replace(_policy("'long' in text_lists"), lists=lists)
    texts = [
        "Rolex AAA-grade, boxed",
        "a class act",
        "cheap $$$ here",
        "replica🔥",
        "mirror  quality!",
        "mirror qualityx",
        "filler term 7",
        "filler term 700",
        "-",
    ]
    matched = 0
    for text in texts:
        item = listing(title=text, description="", attributes={})
        expected = _text_lists_by_ngrams(lists, text.lower())
        assert rule_context(policy, item)["text_lists"] == expected, text
        matched += bool(expected)
    assert 0 < matched < len(texts)
