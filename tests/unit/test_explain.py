"""Explained verdicts: what decided each one (scores against thresholds with margins, the
rule's match, the deciding window), bounded and stable, and `streamproc explain`."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamproc.cli import cli
from streamproc.decision import Evaluation, decide, decide_verdict, evaluate_item, explain
from streamproc.decision.explain_report import summary
from streamproc.decision.thresholds import decide_by_rule
from streamproc.errors import InferenceTimeout
from streamproc.inference.protocol import ModelAnswer, ModelRequest, TokenChoice
from streamproc.policy import Category, Policy, Thresholds, item_windows
from streamproc.policy.model import HeadsRef, Rule
from streamproc.policy.rule_context import first_entry, item_text
from streamproc.policy.rules import CompiledRules
from streamproc.schemas import ContentEvent, SourceRef, Verdict, decode_record, encode
from tests.factories import decided_verdict, listing, listing_dict, video

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _category(id_: str, label: str, review: float = 0.5, reject: float = 0.8) -> Category:
    return Category(
        id=id_,
        label=label,
        title=id_.title(),
        description=f"{id_} content.",
        reason_code=id_.upper(),
        seller_message=f"{id_} is not allowed.",
        thresholds=Thresholds(reject=reject, review=review),
    )


POLICY = Policy(
    name="explain-test",
    content_type="listing",
    preamble="Moderate the listing.",
    categories=(_category("spam", "A"), _category("weapons", "B", review=0.4), _category("drugs", "C")),
    lists=(("blocked_terms", ("aaa grade", "replica", "$$$")),),
    rules=(
        Rule(
            id="blocked",
            stage="pre",
            when="'blocked_terms' in text_lists",
            decision="reject",
            reason_code="BLOCKED",
        ),
        Rule(
            id="contact",
            stage="pre",
            when="title =~ 'zzz' or text =~~ '\\\\b(whatsapp|telegram)\\\\b'",
            decision="review",
            reason_code="OFF_PLATFORM",
        ),
        Rule(id="long-x", stage="pre", when="text =~~ 'x{150,}'", decision="review", reason_code="NOISE"),
        Rule(
            id="cheap",
            stage="pre",
            when="price != null and price < 1",
            decision="review",
            reason_code="PRICE",
        ),
        Rule(
            id="escalate-weapons",
            stage="post",
            when="decision == 'approve' and scores['weapons'] > 0.3",
            decision="review",
            reason_code="WEAPONS_CHECK",
            category="weapons",
        ),
    ),
)
RULES = CompiledRules.compile(POLICY)
PHRASE = "cure cancer"


class ScoresModel:
    """The label scorer's answer: P(spam) = ``phrase_score`` for a request carrying PHRASE,
    else ``score``; the rest of the mass on the safe label."""

    def __init__(
        self, score: float = 0.05, phrase_score: float = 0.95, error: Exception | None = None
    ) -> None:
        self.score, self.phrase_score, self.error = score, phrase_score, error

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        if self.error is not None:
            raise self.error
        score = self.phrase_score if PHRASE in json.dumps(request.body) else self.score
        alternatives = (("A", math.log(score)), ("N", math.log(1 - score)))
        return ModelAnswer(text="A", tokens=(TokenChoice("A", alternatives[0][1], alternatives),))


async def _verdict(event: ContentEvent, model: ScoresModel | None = None, policy: Policy = POLICY) -> Verdict:
    verdict, _ = await decide_verdict(
        policy,
        CompiledRules.compile(policy),
        event,
        model or ScoresModel(),
        model_name="m",
        source=SourceRef(topic="t", partition=0, offset=1),
        received=time.perf_counter(),
        clock=lambda: NOW,
    )
    return verdict


def test_a_threshold_decision_lists_each_category_over_a_threshold_with_its_margin() -> None:
    scores = {"spam": 0.6, "weapons": 0.85, "drugs": 0.1}
    explanation = explain(POLICY, decide(POLICY, scores), scores)
    listed = [(m.category, m.threshold, m.threshold_value, m.margin) for m in explanation.categories]
    # weapons decided (reject), first; spam reached review; drugs reached nothing and is left out.
    assert listed == [("weapons", "reject", 0.8, 0.05), ("spam", "review", 0.5, 0.1)]
    assert explanation.rule is None and explanation.error_kind is None and explanation.window is None


def test_the_deciding_category_comes_first_even_with_a_lower_score() -> None:
    # A post rule decided for weapons (review); spam scored higher against its review threshold.
    scores = {"spam": 0.7, "weapons": 0.45, "drugs": 0.0}
    outcome = decide_by_rule("escalate-weapons", "review", "WEAPONS_CHECK", "", POLICY, "weapons")
    explanation = explain(POLICY, outcome, scores)
    assert [m.category for m in explanation.categories] == ["weapons", "spam"]
    assert explanation.rule is not None
    assert (explanation.rule.rule_id, explanation.rule.stage, explanation.rule.field) == (
        "escalate-weapons",
        "post",
        None,  # a comparison of scores points at no text
    )


def test_an_approval_names_its_closest_category_and_how_far_below_it_stayed() -> None:
    scores = {"spam": 0.45, "weapons": 0.3, "drugs": 0.2}
    explanation = explain(POLICY, decide(POLICY, scores), scores)
    [closest] = explanation.categories
    assert (closest.category, closest.threshold, closest.threshold_value) == ("spam", "review", 0.5)
    assert closest.margin == pytest.approx(-0.05)
    assert explanation.omitted_categories == 0


async def test_a_text_lists_rule_names_the_entry_and_where_it_occurs() -> None:
    event = listing(title="Rolex Submariner", description="Top AAA  Grade replica, boxed.")
    verdict = await _verdict(event)
    assert verdict.explanation is not None
    rule = verdict.explanation.rule
    assert rule is not None
    assert (rule.rule_id, rule.stage, rule.field, rule.list_name) == (
        "blocked",
        "pre",
        "text",
        "blocked_terms",
    )
    # The first entry to occur in the item, as the list writes it; the offsets are in `text`.
    assert rule.entry == "aaa grade"
    text = item_text(event, "text")
    assert text is not None and rule.start is not None and rule.end is not None
    assert text[rule.start : rule.end] == rule.text == "aaa  grade"


@pytest.mark.parametrize(
    "event",
    [
        listing(title="\uff32eplica  WATCH", description="Boxed."),  # fullwidth R: folded in text
        video(caption="\uff21 caption", ocr_text="SALE"),
    ],
)
def test_item_text_is_the_field_rules_read(event: ContentEvent) -> None:
    fields = RULES.context(event)
    for name in ("text", "raw_text", "title", "description", "caption", "transcript", "ocr_text"):
        assert item_text(event, name) == fields[name], name
    assert item_text(event, "owner_id") is None  # not the item's own text


def test_a_list_entry_without_words_is_found_as_a_substring() -> None:
    assert first_entry(("replica", "$$$"), "only $$$ today, replica") == ("$$$", 5, 8)
    assert first_entry(("replica",), "replicas only") is None  # whole words, as text_lists matches


async def test_a_regex_rule_gives_its_first_match_and_offsets() -> None:
    event = listing(title="Oak table", description="Message me on Telegram or WhatsApp.")
    verdict = await _verdict(event)
    assert verdict.explanation is not None and verdict.explanation.rule is not None
    rule = verdict.explanation.rule
    # `title =~ 'zzz'` did not match: the `or`'s other branch is where the rule matched.
    assert (rule.rule_id, rule.field, rule.text, rule.list_name) == ("contact", "text", "telegram", None)
    text = item_text(event, "text")
    assert text is not None and text[rule.start : rule.end] == "telegram"


def test_an_owner_list_rule_names_the_owner_and_a_negated_regex_points_at_nothing() -> None:
    # The negated regex's text occurs ("mug"), but that part did not make the rule match.
    rule = Rule(
        id="banned",
        stage="pre",
        when="text !~~ 'mug' or 'banned' in owner_lists",
        decision="reject",
        reason_code="BANNED",
    )
    rules = CompiledRules.compile(dataclasses.replace(POLICY, lists=(("banned", ("S-13",)),), rules=(rule,)))
    event = listing(seller_id="S-13", title="Handmade mug")
    assert rules.evaluate_pre(event).hit is not None
    span = rules.span("banned", rules.context(event))
    assert span is not None
    assert (span.field, span.text, span.start, span.end, span.list_name) == (
        "owner_id",
        "S-13",
        0,
        4,
        "banned",
    )


async def test_a_rule_whose_form_places_no_text_gives_its_id() -> None:
    verdict = await _verdict(listing(price={"amount": "0.50", "currency": "EUR"}))
    assert verdict.explanation is not None and verdict.explanation.rule is not None
    assert verdict.explanation.rule.model_dump(exclude_none=True) == {"rule_id": "cheap", "stage": "pre"}


async def test_a_windowed_item_names_the_window_its_deciding_score_came_from() -> None:
    event = listing(title="Oak table", description="Sturdy oak table. " * 300 + PHRASE + " now.")
    windows = item_windows(POLICY, event).windows
    assert len(windows) > 2
    verdict = await _verdict(event)
    explanation = verdict.explanation
    assert verdict.decision == "reject" and explanation is not None and explanation.window is not None
    deciding = next(i for i, w in enumerate(windows) if PHRASE in w.text)
    assert deciding > 0
    window = explanation.window
    assert (window.index, window.windows) == (deciding, len(windows))
    assert (window.field, window.start, window.end) == windows[deciding].covers
    assert window.field == "description"
    assert explanation.categories[0].window == deciding


async def test_a_single_window_item_names_no_window() -> None:
    verdict = await _verdict(listing(title=f"Oak table, {PHRASE}"))
    assert verdict.explanation is not None
    assert verdict.explanation.window is None and verdict.explanation.categories[0].window is None


async def test_window_scores_are_kept_without_changing_the_item_score() -> None:
    event = listing(description="Sturdy oak table. " * 300 + PHRASE)
    result: Evaluation = await evaluate_item(POLICY, RULES, event, ScoresModel(score=0.2, phrase_score=0.9))
    assert len(result.windows) == len(item_windows(POLICY, event).windows)
    assert result.scores["spam"] == pytest.approx(max(w.scores["spam"] for w in result.windows))
    assert [w.covers is None for w in result.windows] == [True] + [False] * (len(result.windows) - 1)


async def test_errors_give_their_kind() -> None:
    verdict = await _verdict(listing(), ScoresModel(error=InferenceTimeout("slow")))
    assert verdict.explanation is not None
    assert (verdict.decision, verdict.explanation.error_kind) == ("review", "timeout")
    assert verdict.explanation.categories == [] and verdict.explanation.rule is None


async def test_a_rule_that_fails_is_named_with_its_stage() -> None:
    failing = Rule(
        id="path", stage="pre", when="category_path[3] == 'x'", decision="reject", reason_code="PATH"
    )
    policy = dataclasses.replace(POLICY, rules=(failing,))
    verdict = await _verdict(listing(), policy=policy)
    assert verdict.explanation is not None and verdict.explanation.rule is not None
    assert verdict.explanation.error_kind == "rule_failed"
    assert (verdict.explanation.rule.rule_id, verdict.explanation.rule.stage) == ("path", "pre")


def test_the_heads_checksum_is_named() -> None:
    digest = "ab" * 32
    probe = dataclasses.replace(
        POLICY, scorer="embedding_probe", heads=HeadsRef(file="h.json", sha256=digest)
    )
    scores = {"spam": 0.1}
    assert explain(probe, decide(probe, scores), scores).artefacts == {"heads": digest}
    assert explain(POLICY, decide(POLICY, scores), scores).artefacts == {}


async def test_the_explanation_is_bounded() -> None:
    many = tuple(_category(f"c{n:02}", letter) for n, letter in enumerate("ABCDEFGHIJKLMO"))
    policy = dataclasses.replace(POLICY, categories=many, rules=())
    scores = {c.id: 0.6 + n / 100 for n, c in enumerate(many)}
    explanation = explain(policy, decide(policy, scores), scores)
    assert len(explanation.categories) == 10 and explanation.omitted_categories == 4
    assert explanation.categories[0].category == "c13"  # the decider, the highest
    # A match longer than the bound is cut; its offsets still say where it ends.
    verdict = await _verdict(listing(description="x" * 500))
    assert verdict.explanation is not None and verdict.explanation.rule is not None
    rule = verdict.explanation.rule
    assert rule.text == "x" * 100 and rule.end is not None and rule.start is not None
    assert rule.end - rule.start == 500


async def test_the_explanation_is_stable() -> None:
    event = listing(title="Oak table", description="Sturdy oak table. " * 300 + PHRASE)
    first, second = await _verdict(event), await _verdict(event)
    assert first.explanation is not None and second.explanation is not None
    assert encode(first.explanation) == encode(second.explanation)


def test_a_verdict_written_before_explanations_still_decodes() -> None:
    verdict = decided_verdict(POLICY, {"spam": 0.9}, now=NOW)
    assert verdict.explanation is not None  # build_verdict explains from the scores by default
    old = verdict.model_dump(mode="json")
    del old["explanation"]
    decoded = decode_record(Verdict, json.dumps(old).encode(), "verdict")
    assert decoded.explanation is None and decoded.decision == "reject"


def _write(path: Path, *records: object) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


async def test_explain_prints_the_verdict_beside_its_item(tmp_path: Path) -> None:
    item = listing_dict(listing_id="L-9", description="Genuine? No: replica, boxed.")
    verdict = await _verdict(listing(**item))
    other = decided_verdict(POLICY, {"spam": 0.1}, now=NOW, listing_id="L-1")
    verdicts = _write(
        tmp_path / "verdicts.jsonl", other.model_dump(mode="json"), verdict.model_dump(mode="json")
    )
    items = _write(tmp_path / "items.jsonl", listing_dict(), item)
    result = CliRunner().invoke(cli, ["explain", str(verdicts), "--content-id", "L-9", "--item", str(items)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "listing L-9 revision 0: REJECT (automated, live)"
    assert "  decided by   rule blocked" in lines
    assert f"  policy       {POLICY.version}" in lines
    assert '  blocked (pre rule): entry "replica" of list blocked_terms in text [' in "\n".join(lines)
    assert any("»replica«" in line and "genuine? no: " in line for line in lines)
    assert (
        "  clipped      none named: no model scores decided (a rule before the model, or an error)" in lines
    )


def test_explain_prints_scores_against_thresholds() -> None:
    verdict = decided_verdict(POLICY, {"spam": 0.6, "weapons": 0.85, "drugs": 0.1}, now=NOW)
    result = CliRunner().invoke(cli, ["explain", "-"], input=verdict.model_dump_json() + "\n")  # stdin
    assert result.exit_code == 0, result.output
    assert "  weapons              0.8500  reached reject 0.8000  margin +0.0500" in result.output
    assert "  spam                 0.6000  reached review 0.5000  margin +0.1000" in result.output
    assert "drugs" not in result.output
    assert "  clipped      nothing: the model read the whole item" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json\n", "v.jsonl:1: value is not valid JSON"),
        ('{"decision": "approve"}\n', "v.jsonl:1: "),
        ("\n", "has no verdict"),
    ],
)
def test_explain_on_a_bad_file_says_so_in_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "v.jsonl"
    path.write_text(content)
    result = CliRunner().invoke(cli, ["explain", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_explain_on_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["explain", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "does not exist" in result.output


def test_the_one_line_summary_names_what_decided() -> None:
    base = {
        "kind": "automated", "content_type": "listing", "content_id": "L-1", "revision": 0,
        "policy_version": "p@1", "model": "m",
        "latency": {"processing_seconds": 0.1, "end_to_end_seconds": 0.2},
        "idempotency_key": "k", "source": {"topic": "t", "partition": 0, "offset": 1},
        "produced_at": "2026-01-01T00:00:00Z", "reason_code": "R", "seller_message": "",
    }  # fmt: skip
    by_rule = Verdict.model_validate(base | {
        "decision": "reject", "scores": {}, "decided_by": {"kind": "rule", "id": "blocked"},
        "explanation": {"rule": {"rule_id": "blocked", "stage": "pre", "field": "text", "text": "replica",
                                 "start": 6, "end": 13, "list_name": "blocked_terms", "entry": "replica"}},
    })  # fmt: skip
    assert summary(by_rule) == 'rule blocked ("replica" in text)'
    by_score = Verdict.model_validate(base | {
        "decision": "review", "scores": {"spam": 0.7}, "decided_by": {"kind": "category", "id": "spam"},
        "clipped_fields": ["description"],
        "explanation": {"categories": [{"category": "spam", "score": 0.7, "threshold": "review",
                                        "threshold_value": 0.5, "margin": 0.2, "window": 2}]},
    })  # fmt: skip
    assert summary(by_score) == "spam 0.70 >= review 0.50, window 2; clipped description"
