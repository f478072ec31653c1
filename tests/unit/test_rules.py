from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from streamproc.errors import ConfigError
from streamproc.policy import Policy, Rule, rule_fields_reference
from streamproc.policy.rule_context import rule_context
from streamproc.policy.rule_fields import POST_RULE_FIELDS, RULE_FIELDS
from streamproc.policy.rules import CompiledRules, RuleHit, RuleOutcome
from streamproc.schemas import ContentType, Decision, ListingEvent
from tests.factories import default_policy, listing, shipped_policies, video

BLOCKED_TERMS = "$any([term.as_lower in text for term in lists['blocked_terms']])"
BANNED_SELLER = "owner_id in lists['banned_sellers']"
PRICE_ANOMALY = "attributes&['brand'] != null and median_price != null and price < median_price * 0.2"
FIRST_REGULATED = (
    "decision != 'reject' and attributes&['first_listing'] == 'true' and category_path&[0] == 'Health'"
)
ESCALATE = "decision == 'approve' and max_score > 0.3"

LISTS = (
    ("banned_sellers", ("S-666", "S-667")),
    ("blocked_terms", ("Replica", "mirror quality")),
)
MEDIANS = (("Fashion > Watches", 2000.0), ("Fashion", 50.0))


def rule(
    id: str,
    when: str,
    stage: Literal["pre", "post"] = "pre",
    decision: Decision = "reject",
    category: str | None = None,
) -> Rule:
    return Rule(
        id=id,
        stage=stage,
        when=when,
        decision=decision,
        reason_code=id.upper(),
        seller_message=f"{id} says no",
        category=category,
    )


def policy(*rules: Rule, content_type: ContentType = "listing") -> Policy:
    return dataclasses.replace(default_policy(content_type), rules=rules, lists=LISTS, median_prices=MEDIANS)


def compiled(*rules: Rule, content_type: ContentType = "listing") -> CompiledRules:
    return CompiledRules.compile(policy(*rules, content_type=content_type))


def watch(price: str, **attributes: str) -> ListingEvent:
    return listing(
        title="Submariner watch",
        category_path=["Fashion", "Watches", "Luxury"],
        price={"amount": price, "currency": "EUR"},
        attributes=attributes,
    )


# --- the rule forms policy packs use -------------------------------------------------


def test_blocked_term_in_any_text_rejects_before_the_model() -> None:
    rules = compiled(rule("blocked_terms", BLOCKED_TERMS, category="counterfeit"))
    hit = rules.pre(listing(description="Swiss watch, MIRROR QUALITY, boxed"))
    assert hit == RuleHit(
        rule_id="blocked_terms",
        decision="reject",
        reason_code="BLOCKED_TERMS",
        seller_message="blocked_terms says no",
        category="counterfeit",
    )
    assert rules.pre(listing(attributes={"style": "replica"})) is not None  # attribute values count
    assert rules.pre(listing()) is None


def test_blocked_term_in_a_video_transcript() -> None:
    rules = compiled(rule("blocked_terms", BLOCKED_TERMS), content_type="video")
    assert rules.pre(video(transcript="This replica is perfect")) is not None
    assert rules.pre(video()) is None


def test_precomputed_list_fields_match_whole_words_and_exact_owners() -> None:
    rules = compiled(
        rule("banned", "'banned_sellers' in owner_lists"),
        rule("blocked", "'blocked_terms' in text_lists", decision="review"),
    )
    banned = rules.pre(listing(seller_id="S-667"))
    assert banned is not None and banned.rule_id == "banned"
    assert rules.pre(listing(seller_id="S-6670")) is None  # exact ids, not prefixes

    for text in ("REPLICA watch", "a replica.", "mirror-quality copy", "Mirror   Quality!"):
        hit = rules.pre(listing(title=text))
        assert hit is not None and hit.rule_id == "blocked", text
    for text in ("replicas", "mirror of quality", "a mirror"):
        assert rules.pre(listing(title=text)) is None, text

    post_only = compiled(rule("blocked", "'blocked_terms' in text_lists", stage="post"), content_type="video")
    assert post_only.post(video(ocr_text="REPLICA"), {}, "approve") is not None


def test_text_lists_matches_entries_without_words_as_substrings() -> None:
    symbols = dataclasses.replace(policy(), lists=(("emoji", ("💊", "  ")),))
    context = rule_context(symbols, listing(title="pills💊💊"))
    assert context["text_lists"] == ["emoji"]
    assert (
        rule_context(symbols, listing(title="pills  and more"))["text_lists"] == []
    )  # blank entries are ignored


def test_large_lists_through_precomputed_fields_stay_fast() -> None:
    big = dataclasses.replace(
        policy(),
        lists=(
            ("banned_sellers", tuple(f"B-{i}" for i in range(100_000))),
            ("blocked_terms", tuple(f"term {i}" for i in range(20_000))),
        ),
        rules=(
            rule("banned", "'banned_sellers' in owner_lists"),
            rule("blocked", "'blocked_terms' in text_lists"),
        ),
    )
    rules = CompiledRules.compile(big)
    item = listing(description="plain words " * 300)
    # About 1 ms each here, against about 0.3 s when rules read ``lists`` itself: measured by
    # load/profile_processor.py, not timed here (a busy machine would fail a bound).
    assert rules.pre(item) is None
    assert rules.pre(listing(seller_id="B-99999")) is not None
    assert rules.pre(listing(title="TERM 19999!")) is not None


def test_regex_search_needs_doubled_backslashes() -> None:
    rules = compiled(rule("aaa", r"text =~~ '\\baaa grade\\b'"))
    assert rules.pre(listing(title="Bag, AAA grade leather")) is not None
    assert rules.pre(listing(title="Bag, aaa grades")) is None


def test_banned_seller_and_creator_are_rejected() -> None:
    assert compiled(rule("banned", BANNED_SELLER)).pre(listing(seller_id="S-666")) is not None
    assert compiled(rule("banned", BANNED_SELLER)).pre(listing(seller_id="S-1")) is None
    videos = compiled(rule("banned", BANNED_SELLER), content_type="video")
    assert videos.pre(video(creator_id="S-667")) is not None


def test_branded_item_far_below_the_category_median_goes_to_review() -> None:
    rules = compiled(rule("price_anomaly", PRICE_ANOMALY, decision="review", category="counterfeit"))
    # "Fashion > Watches > Luxury" has no median of its own: the longest prefix listed counts.
    hit = rules.pre(watch("199.99", brand="Rolex"))
    assert hit is not None and hit.decision == "review" and hit.category == "counterfeit"
    assert rules.pre(watch("400", brand="Rolex")) is None  # exactly 20% is not below it
    assert rules.pre(watch("199.99")) is None  # no brand


def test_price_rule_without_a_median_does_not_match_or_raise() -> None:
    guarded = compiled(rule("guarded", PRICE_ANOMALY))
    unguarded = compiled(rule("unguarded", "price < median_price * 0.2"), rule("next", "price > 1"))
    no_median = listing(category_path=["Garden"], attributes={"brand": "Acme"})

    assert guarded.evaluate_pre(no_median).errors == ()
    assert guarded.pre(no_median) is None
    assert guarded.pre(video()) is None  # videos have no price either

    outcome = unguarded.evaluate_pre(no_median)
    assert outcome.hit is not None and outcome.hit.rule_id == "next"  # the failing rule is skipped
    [error] = outcome.errors
    assert error.rule_id == "unguarded" and "not a numeric value" in error.message


def test_missing_attribute_is_an_evaluation_error_unless_null_safe() -> None:
    strict = compiled(rule("strict", "attributes['brand'] == 'Rolex'"))
    outcome = strict.evaluate_pre(listing(attributes={}))
    assert outcome.hit is None
    [error] = outcome.errors
    assert error.rule_id == "strict" and "'brand'" in error.message

    safe = compiled(rule("safe", "attributes&['brand'] == 'Rolex'"))
    assert safe.evaluate_pre(listing(attributes={})).errors == ()
    assert safe.pre(listing(attributes={"brand": "Rolex"})) is not None


def test_empty_lists_and_mappings_evaluate_without_errors() -> None:
    empty_lists = dataclasses.replace(policy(), lists=(("blocked_terms", ()), ("banned_sellers", ())))
    rules = CompiledRules.compile(
        dataclasses.replace(
            empty_lists,
            rules=(
                rule("terms", BLOCKED_TERMS),
                rule("banned", BANNED_SELLER),
                rule("brand", "attributes&['brand'] != null"),
                rule("root", "category_path&[0] == 'Health'"),
            ),
        )
    )
    assert rules.evaluate_pre(listing(attributes={}, category_path=[])) == RuleOutcome(None)


def test_first_listing_in_a_regulated_category_is_reviewed_whatever_the_scores() -> None:
    rules = compiled(rule("first_regulated", FIRST_REGULATED, stage="post", decision="review"))
    item = listing(category_path=["Health", "Supplements"], attributes={"first_listing": "true"})
    low = dict.fromkeys(policy().category_ids, 0.0)

    assert rules.pre(item) is None  # a post rule never runs before the model
    hit = rules.post(item, low, "approve")
    assert hit is not None and hit.decision == "review"
    assert rules.post(item, low, "reject") is None  # it never downgrades a rejection
    assert (
        rules.post(listing(category_path=["Healthy Snacks"], attributes=item.attributes), low, "approve")
        is None
    )
    assert rules.post(listing(category_path=["Health"]), low, "approve") is None


def test_post_rule_escalates_approval_when_any_score_is_above_point_three() -> None:
    rules = compiled(rule("escalate", ESCALATE, stage="post", decision="review"))
    scores = {"counterfeit": 0.1, "spam": 0.31}
    hit = rules.post(listing(), scores, "approve")
    assert hit is not None and hit.rule_id == "escalate" and hit.decision == "review"
    assert rules.post(listing(), {"counterfeit": 0.3}, "approve") is None
    assert rules.post(listing(), scores, "review") is None
    assert rules.post(listing(), {}, "approve") is None  # max_score is 0 without scores


def test_post_rule_reads_one_category_score() -> None:
    rules = compiled(rule("fake", "scores['counterfeit'] > 0.4", stage="post", category="counterfeit"))
    assert rules.post(listing(), {"counterfeit": 0.5, "spam": 0.0}, "review") is not None
    assert rules.post(listing(), {"counterfeit": 0.2, "spam": 0.9}, "review") is None


# --- stages and order ------------------------------------------------------------------


def test_first_matching_rule_of_the_stage_wins_in_policy_order() -> None:
    rules = compiled(
        rule("post_first", "true", stage="post", decision="review"),
        rule("no", "false"),
        rule("banned", BANNED_SELLER, decision="reject"),
        rule("everything", "true", decision="approve"),
        rule("post_second", "true", stage="post", decision="reject"),
    )
    assert rules.rule_ids == ("no", "banned", "everything", "post_first", "post_second")
    assert rules.pre(listing(seller_id="S-666")) == RuleHit(
        "banned", "reject", "BANNED", "banned says no", None
    )
    pre = rules.pre(listing())
    assert pre is not None and pre.rule_id == "everything"
    post = rules.post(listing(), {}, "approve")
    assert post is not None and post.rule_id == "post_first"


def test_a_policy_without_rules_matches_nothing() -> None:
    rules = CompiledRules.compile(dataclasses.replace(default_policy("listing"), rules=()))
    assert rules.rule_ids == ()
    assert rules.evaluate_pre(listing()) == RuleOutcome(None)
    assert rules.post(listing(), {"counterfeit": 1.0}, "reject") is None


# --- compile-time validation -----------------------------------------------------------


def compile_error(*rules: Rule) -> str:
    with pytest.raises(ConfigError) as info:
        compiled(*rules)
    return str(info.value)


@pytest.mark.parametrize(
    ("when", "stage", "expected"),
    [
        ("prise < 10", "pre", "unknown field 'prise' (did you mean 'price'?)"),
        ("seller_id == 'S-1'", "pre", "unknown field 'seller_id'"),
        ("zzz == 1", "post", "unknown field 'zzz'; fields: content_type, content_id,"),
        (
            "max_score > 0.5",
            "pre",
            "unknown field 'max_score': scores, decision, max_score exist only in post",
        ),
        ("price <", "pre", "syntax error"),
        ("text == 'a' and and", "post", "syntax error"),
        ("text > 3", "pre", "type error: data type mismatch"),
        ("decision + 1 > 0", "post", "type error"),
        ("price", "pre", "gives a FLOAT, not true/false"),
        ("attributes&['brand']", "pre", "gives a STRING, not true/false"),
        ("owner_id in lists['banned_seller']", "pre", "no list 'banned_seller'"),
        ('scores["counterfit"] > 0.5', "post", "scores has no category 'counterfit'"),
        ("'banned_seller' in owner_lists", "pre", "no list 'banned_seller' (owner_lists)"),
        ('"blocked" in text_lists', "post", "no list 'blocked' (text_lists)"),
    ],
)
def test_compile_rejects_bad_expressions_naming_the_rule(
    when: str, stage: Literal["pre", "post"], expected: str
) -> None:
    message = compile_error(rule("bad_rule", when, stage=stage))
    assert "rule 'bad_rule'" in message
    assert expected in message


def test_compile_rejects_dot_access_on_mappings() -> None:
    message = compile_error(rule("dotted", "attributes.brand == 'Rolex'"))
    assert "rule 'dotted'" in message and "mapping['brand']" in message


def test_compile_rejects_an_unknown_category_decision_and_duplicate_ids() -> None:
    bad_decision = dataclasses.replace(rule("bad_decision", "true"), decision="block")  # type: ignore[arg-type]
    message = compile_error(
        rule("a", "true", category="counterfiet"),
        rule("b", "true"),
        rule("b", "false"),
        bad_decision,
    )
    # Every problem is reported at once, each with its rule id.
    assert "rule 'a': category 'counterfiet' is not a category of the policy" in message
    assert "rule 'b': the id is used by an earlier rule" in message
    assert "rule 'bad_decision': decision must be one of" in message
    assert message.startswith(f"policy {default_policy('listing').name} has invalid rules")


def test_valid_example_rules_compile_in_either_stage() -> None:
    for when in (BLOCKED_TERMS, BANNED_SELLER, PRICE_ANOMALY):
        compiled(rule("pre", when), rule("post", when, stage="post"))
    compiled(rule("post1", FIRST_REGULATED, stage="post"), rule("post2", ESCALATE, stage="post"))


# --- the context -----------------------------------------------------------------------


def test_listing_context() -> None:
    item = listing(
        listing_id="L-9",
        revision=3,
        title="Rolex WATCH",
        description="Boxed",
        attributes={"brand": "Rolex", "size": "40mm"},
        category_path=["Fashion", "Watches"],
        price={"amount": "250.50", "currency": "USD"},
    )
    context = rule_context(policy(), item)
    assert tuple(context) == RULE_FIELDS
    assert context | {"lists": None} == {
        "content_type": "listing",
        "content_id": "L-9",
        "revision": 3,
        "owner_id": "S-1",
        "locale": "en-GB",
        "text": "rolex watch\nfashion > watches\nbrand: rolex\nsize: 40mm\nboxed",
        "raw_text": "Rolex WATCH\nFashion > Watches\nbrand: Rolex\nsize: 40mm\nBoxed",
        "clipped_fields": [],
        "title": "Rolex WATCH",
        "description": "Boxed",
        "category": "Fashion > Watches",
        "category_path": ["Fashion", "Watches"],
        "price": 250.5,
        "currency": "USD",
        "attributes": {"brand": "Rolex", "size": "40mm"},
        "image_count": 1,
        "caption": "",
        "transcript": "",
        "ocr_text": "",
        "duration_seconds": None,
        "keyframe_count": 0,
        "linked_product_count": 0,
        "median_price": 2000.0,
        "lists": None,
        "owner_lists": [],
        "text_lists": [],
    }
    assert context["lists"] == dict(LISTS)


def test_video_context_with_post_fields() -> None:
    item = video(caption="Try ON", linked_product_ids=["L-1", "L-2"])
    context = rule_context(policy(content_type="video"), item, {"adult": 0.25, "spam": 0.5}, "review")
    assert tuple(context) == RULE_FIELDS + POST_RULE_FIELDS
    assert context["content_type"] == "video" and context["owner_id"] == "C-1"
    assert context["text"] == "try on\nreach up, breathe in.\nday 1"
    assert context["category"] == "" and context["category_path"] == []
    assert context["price"] is None and context["median_price"] is None and context["currency"] == ""
    assert context["attributes"] == {} and context["title"] == ""
    assert context["duration_seconds"] == 30 and context["keyframe_count"] == 1
    assert context["linked_product_count"] == 2
    assert context["scores"] == {"adult": 0.25, "spam": 0.5}
    assert context["decision"] == "review" and context["max_score"] == 0.5


@pytest.mark.parametrize(
    ("path", "median"),
    [
        (["Fashion", "Watches", "Luxury"], 2000.0),
        (["Fashion", "Watches"], 2000.0),
        (["Fashion", "Bags"], 50.0),
        (["Home"], None),
        ([], None),
    ],
)
def test_median_price_uses_the_longest_listed_prefix(path: list[str], median: float | None) -> None:
    assert rule_context(policy(), listing(category_path=path))["median_price"] == median


def test_one_context_serves_both_stages() -> None:
    rules = shipped_policies().rules(default_policy("listing"))
    item = listing(category_path=["Health", "Tea"], attributes={"first_listing": "true"})
    context = rules.context(item)
    assert context["category"] == "Health > Tea" and "scores" not in context
    assert rules.evaluate_pre(item, context=context) == rules.evaluate_pre(item)
    post = rules.evaluate_post(item, {"spam": 0.1}, "approve", context=context)
    assert post == rules.evaluate_post(item, {"spam": 0.1}, "approve")
    assert post.hit is not None and post.hit.rule_id == "first-listing-in-regulated-category"
    assert "scores" not in context  # the post fields are added to a copy


def test_no_rules_no_context() -> None:
    assert (
        CompiledRules.compile(dataclasses.replace(default_policy("listing"), rules=())).context(listing())
        == {}
    )


def test_rule_fields_reference_lists_every_field_once() -> None:
    rows = rule_fields_reference().splitlines()
    assert rows[:2] == ["| field | type | stages | description |", "|---|---|---|---|"]
    assert [row.split(" | ")[0].removeprefix("| `").removesuffix("`") for row in rows[2:]] == [
        *RULE_FIELDS,
        *POST_RULE_FIELDS,
    ]
    assert all(row.count(" | ") == 3 and row.endswith(" |") for row in rows[2:])  # no stray pipe
    assert "| `price` | number or null | pre, post | " in rows[2 + RULE_FIELDS.index("price")]
    assert "| `lists` | mapping of string to list of strings | pre, post | " in "\n".join(rows)
    assert "| `scores` | mapping of string to number | post | " in "\n".join(rows)
