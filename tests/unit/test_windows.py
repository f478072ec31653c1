# ruff: noqa: RUF001 - look-alike letters are what these tests are about
"""No hiding place: text past a field's clip reaches the model in further windows, or the item
is named clipped and a post rule escalates it; images only from allowed hosts; rules read the
same normalised text; a rule that raises fails closed."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from prometheus_client import CollectorRegistry

from streamproc.decision import evaluate_item
from streamproc.errors import ConfigError
from streamproc.inference.protocol import ModelAnswer, ModelRequest, TokenChoice
from streamproc.metrics import create
from streamproc.policy import Category, MediaBudget, Policy, Thresholds, item_windows
from streamproc.policy.model import InvalidPolicy, Rule
from streamproc.policy.normalise import fold, normalise
from streamproc.policy.prompt import WINDOW_CHARS
from streamproc.policy.rules import CompiledRules
from streamproc.schemas import ContentEvent
from tests.factories import listing, video

PHRASE = "Miracle drops cure cancer in 30 days, stop chemotherapy"
CLAIMS = Category(
    id="claims",
    label="A",
    title="Health claims",
    description="False health claims.",
    reason_code="HEALTH_CLAIM",
    seller_message="Health claims are not allowed.",
    thresholds=Thresholds(reject=0.8, review=0.5),
)
ESCALATE_CLIPPED = Rule(
    id="clipped-content",
    stage="post",
    when="decision == 'approve' and clipped_fields != []",
    decision="review",
    reason_code="CONTENT_NOT_FULLY_READ",
)
LISTINGS = Policy(
    name="windows-test",
    content_type="listing",
    preamble="Moderate the item.",
    categories=(CLAIMS,),
    rules=(ESCALATE_CLIPPED,),
)
VIDEOS = dataclasses.replace(LISTINGS, content_type="video")


class PhraseModel:
    """The label scorer's answer: P(claims) 0.95 when the request carries the phrase, else 0.05."""

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        self.requests.append(request)
        score = 0.95 if "cure cancer" in json.dumps(request.body, ensure_ascii=False) else 0.05
        alternatives = (("A", math.log(score)), ("N", math.log(1 - score)))
        return ModelAnswer(text="A", tokens=(TokenChoice("A", alternatives[0][1], alternatives),))


#: The placements that once hid a violation from the model: past the title's and the
#: description's clip, behind many attributes, past the transcript's clip, behind characters
#: that NFKC lengthens 18-fold.
HIDING: dict[str, ContentEvent] = {
    "description": listing(description="Sturdy oak table. " * 120 + PHRASE),
    "title": listing(title="Oak table " * 30 + PHRASE),
    "attributes": listing(attributes={f"k{n:03}": "plain value " * 5 for n in range(99)} | {"zz": PHRASE}),
    "transcript": video(transcript="la " * 1_000 + PHRASE),
    "expanding title": listing(title="\ufdfa" * 17 + PHRASE),
}


@pytest.mark.parametrize("placement", HIDING)
async def test_hidden_text_reaches_the_model_or_escalates(placement: str) -> None:
    event = HIDING[placement]
    policy = LISTINGS if event.content_type == "listing" else VIDEOS
    windows = item_windows(policy, event)
    assert len(windows.windows) > 1  # the first window alone would miss it
    model = PhraseModel()
    result = await evaluate_item(policy, CompiledRules.compile(policy), event, model)
    assert result.outcome.decision != "approve"
    reached = any("cure cancer" in json.dumps(r.body, ensure_ascii=False) for r in model.requests)
    assert reached or result.clipped


async def test_text_past_every_window_is_named_and_escalated() -> None:
    event = listing(description="Sturdy oak table. " * 1_100 + PHRASE)
    model = PhraseModel()
    result = await evaluate_item(LISTINGS, CompiledRules.compile(LISTINGS), event, model)
    assert len(model.requests) == LISTINGS.max_text_windows
    assert result.clipped == ("description",)
    assert (result.outcome.decision, result.outcome.reason_code) == ("review", "CONTENT_NOT_FULLY_READ")
    # More windows read it, and then the model decides.
    wider = dataclasses.replace(LISTINGS, max_text_windows=12)
    result = await evaluate_item(wider, CompiledRules.compile(wider), event, PhraseModel())
    assert result.clipped == () and result.outcome.reason_code == "HEALTH_CLAIM"


def test_windows_stay_within_their_budget() -> None:
    longest = listing(
        title="\ufdfa" * 500,
        description="\ufdfa" * 20_000,
        category_path=["\ufdfa" * 200] * 10,
        attributes={f"\ufdfa{n:03}" + "k" * 196: "\ufdfa" * 2_000 for n in range(100)},
    )
    windows = item_windows(LISTINGS, longest)
    assert len(windows.windows) == LISTINGS.max_text_windows
    assert max(len(w.text) for w in windows.windows) < 3 * WINDOW_CHARS + 1_000
    assert windows.clipped == ("attributes", "category_path", "description", "title")


def test_attributes_are_read_in_key_order_whatever_the_sellers_order() -> None:
    forwards = listing(attributes={"a": "1", "b": "2"})
    backwards = listing(attributes={"b": "2", "a": "1"})
    assert item_windows(LISTINGS, forwards) == item_windows(LISTINGS, backwards)


def test_a_short_item_is_one_window_and_not_clipped() -> None:
    windows = item_windows(LISTINGS, listing())
    assert len(windows.windows) == 1 and windows.clipped == ()


# --- media hosts ------------------------------------------------------------------------


def test_images_go_to_the_model_only_from_allowed_hosts() -> None:
    media = MediaBudget(max_images=4, allowed_hosts=("IMG.example.com",))
    policy = dataclasses.replace(LISTINGS, media=media)
    urls = [
        "https://img.example.com/a.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "https://x.test/b.png",
    ]
    windows = item_windows(policy, listing(image_urls=urls))
    assert windows.first.image_urls == ("https://img.example.com/a.jpg",)
    assert windows.clipped == ("image_urls",)
    frames = [{"url": u, "timestamp_seconds": n} for n, u in enumerate(urls)]
    videos = dataclasses.replace(
        VIDEOS, media=MediaBudget(max_keyframes=4, allowed_hosts=("img.example.com",))
    )
    assert item_windows(videos, video(keyframes=frames)).clipped == ("keyframes",)


def test_a_pack_with_images_must_name_their_hosts() -> None:
    with pytest.raises(InvalidPolicy, match=r"media.allowed_hosts"):
        MediaBudget(max_images=1)


# --- one normalisation for rules and the model ------------------------------------------


DISGUISES = {
    "fullwidth": "ｒｅｐｌｉｃａ",
    "zero-width": "rep\u200blica",
    "soft hyphen": "rep\u00adli\u00adca",
    "cyrillic": "rерlіса",
    "mixed case and bidi control": "Re\u202eplica",
}


@pytest.mark.parametrize("disguise", DISGUISES)
def test_rules_match_disguised_terms_as_the_model_reads_them(disguise: str) -> None:
    word = DISGUISES[disguise]
    assert fold(word) == "replica"
    assert "replica" in normalise(word).lower() or disguise == "cyrillic"  # the model keeps real letters
    policy = dataclasses.replace(
        LISTINGS,
        lists=(("blocked", ("replica",)),),
        rules=(
            Rule(id="b", stage="pre", when="'blocked' in text_lists", decision="reject", reason_code="B"),
        ),
    )
    rules = CompiledRules.compile(policy)
    for event in (
        listing(title=f"Watch {word}"),
        listing(attributes={f"{word} grade": "yes"}),
        listing(category_path=["Fashion", word]),
    ):
        assert rules.pre(event) is not None, event


def test_normalising_a_hostile_field_is_bounded() -> None:
    assert len(normalise("\ufdfa" * 100_000, 5_000)) == 5_000
    assert normalise("a\u0301" * 3) == "\u00e1" * 3


def test_rules_can_still_read_the_raw_text() -> None:
    event = listing(title="Ｒｅｐｌｉｃａ")
    fields = CompiledRules.compile(LISTINGS).context(event)
    assert fields["raw_text"].startswith("Ｒｅｐｌｉｃａ") and fields["text"].startswith("replica")


# --- rules that fail, regexes that could backtrack --------------------------------------


def _with_rules(*rules: Rule, policy: Policy = LISTINGS) -> tuple[Policy, CompiledRules]:
    policy = dataclasses.replace(policy, rules=rules)
    return policy, CompiledRules.compile(policy)


async def test_a_rule_that_raises_sends_the_item_to_review_and_is_counted() -> None:
    short_path = "category_path[2] == 'Supplements'"  # an index error on a short path
    policy, rules = _with_rules(
        Rule(id="deep", stage="pre", when=short_path, decision="review", reason_code="DEEP")
    )
    registry = CollectorRegistry()
    metrics = create(registry)
    result = await evaluate_item(policy, rules, listing(category_path=["Health"]), PhraseModel(), metrics)
    assert result.outcome.decision == "review"
    assert result.outcome.decided_by.kind == "error" and result.outcome.decided_by.id == "rule:deep"
    labels = {"stage": "pre", "rule": "deep"}
    assert registry.get_sample_value("streamproc_rule_errors_total", labels) == 1.0


async def test_a_failing_post_rule_never_lets_an_approval_through_but_a_stricter_decision_stands() -> None:
    when = "decision == 'approve' and category_path[5] == 'x'"
    policy, rules = _with_rules(Rule(id="p", stage="post", when=when, decision="review", reason_code="P"))
    approved = await evaluate_item(policy, rules, listing(title="Oak table"), PhraseModel())
    assert approved.outcome.decision == "review" and approved.outcome.reason_code == "RULE_ERROR"
    rejected = await evaluate_item(policy, rules, listing(title=PHRASE), PhraseModel())
    assert rejected.outcome.decision == "reject"


@pytest.mark.parametrize(
    ("when", "problem"),
    [
        (r"text =~ '(a)\\1'", "cannot run in linear time"),
        (r"text =~~ 'x(?=y)'", "cannot run in linear time"),
        ("$any([t =~ 'a' for t in category_path])", "not inside a comprehension"),
    ],
)
def test_regexes_that_need_backtracking_are_refused_at_load(when: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        _with_rules(Rule(id="r", stage="pre", when=when, decision="review", reason_code="R"))


def test_a_pattern_that_backtracks_catastrophically_in_re_runs_in_linear_time() -> None:
    # With Python's re, (a+)+$ over 40 a's and a b takes longer than the test's timeout.
    _, rules = _with_rules(
        Rule(id="r", stage="pre", when="title =~~ '(a+)+$'", decision="review", reason_code="R")
    )
    assert rules.pre(listing(title="a" * 40 + "!")) is None
    assert rules.pre(listing(title="a" * 40)) is not None
