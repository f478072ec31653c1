"""`streamproc replay` without a broker or model server: in-memory topics, a fake model.

The scenario (replay_scenario.TRAFFIC) writes each item's score into its title, so every
expected decision below follows from the packs' thresholds by hand.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from streamproc.errors import ConfigError
from streamproc.evaluation.replay import (
    Change,
    ReplayedItem,
    ReplayReport,
    deterministic,
    finish_replay,
    load_labels,
    plan_replay,
    run_replay,
)
from streamproc.evaluation.replay.command import LIVE_VERDICTS
from streamproc.evaluation.replay.join import LiveVerdicts
from streamproc.evaluation.replay.run import applies
from streamproc.evaluation.replay.store import RESULTS, load_progress, load_results
from streamproc.evaluation.replay.tables import pack_report
from streamproc.schemas import DecidedBy, Verdict
from tests.factories import listing
from tests.unit.replay_scenario import (
    CANDIDATE,
    LIVE,
    T0,
    TOPICS,
    MarkedModel,
    MemoryTopics,
    at,
    listing_value,
    live_verdict,
    replay_all,
    request,
    scenario,
    write_labels,
)


async def test_the_report_compares_the_candidate_with_the_live_verdicts(tmp_path: Path) -> None:
    report = await replay_all(await scenario(), tmp_path)
    [pack] = report.packs
    assert (pack.pack, pack.version) == (CANDIDATE.name, CANDIDATE.version)
    assert (pack.items, pack.duplicates, pack.with_live_verdict, pack.without_live_verdict) == (7, 1, 6, 1)
    assert report.undecodable_records == 1
    assert pack.decisions == {
        "approve": {"approve": 1, "reject": 0, "review": 1},
        "reject": {"approve": 0, "reject": 2, "review": 0},
        "review": {"approve": 0, "reject": 0, "review": 2},
    }
    assert pack.changed == 1
    assert (pack.live_automation_rate, pack.candidate_automation_rate) == (4 / 6, 3 / 6)
    assert pack.candidate_automation_rate_all == 3 / 7
    spam, adult = pack.flag_rates
    assert (spam.live_count, spam.candidate_count, adult.live_count, adult.candidate_count) == (3, 4, 0, 0)
    assert spam.live == 3 / 6
    # Six revisions the model scored (L-4 a pre-rule decided; L-5's duplicate not counted twice).
    assert (pack.cost.requests, pack.cost.prompt_tokens, pack.cost.completion_tokens) == (6, 120, 6)
    assert pack.live_policy_versions == {LIVE.version: 6}  # L-9's older verdict was replaced
    [change] = pack.changes_shown
    assert (change.content_id, change.live.decision, change.candidate.decision) == (
        "L-2",
        "approve",
        "review",
    )
    assert (change.candidate.flagged, change.live.policy_version) == (("spam",), LIVE.version)
    assert change.timestamp == T0 + timedelta(minutes=20)
    lines = (tmp_path / "changes.jsonl").read_bytes().splitlines()
    assert [Change.model_validate_json(line) for line in lines] == [change]
    markdown = (tmp_path / "report.md").read_text()
    assert "| without a live verdict | 1 |" in markdown
    assert "| approve | 1 | 1 | 0 |" in markdown  # live approve → candidate approve, review, reject
    assert "**Not retained:**" not in markdown
    assert ReplayReport.model_validate_json((tmp_path / "report.json").read_bytes()) == report


async def test_records_outside_the_time_range_are_not_replayed(tmp_path: Path) -> None:
    model = MarkedModel()
    await replay_all(await scenario(), tmp_path, model)
    replayed = {i.content_id for i in load_results(tmp_path) if hasattr(i, "content_id")}
    assert replayed == {"L-2", "L-3", "L-4", "L-5", "L-6", "L-7", "L-9"}
    assert model.calls == 7  # L-5 twice (its two records), L-4 never


async def test_a_crashed_replay_resumes_where_it_stopped_and_ends_with_the_same_report(
    tmp_path: Path,
) -> None:
    topics = await scenario()
    through = await replay_all(topics, tmp_path / "through")
    out = tmp_path / "crashed"
    plan = await plan_replay(request(out), [CANDIDATE], topics)
    crashing = MarkedModel(fail_at=4)
    with pytest.raises(ExceptionGroup) as raised:
        await run_replay(plan, [CANDIDATE], topics, crashing, out, concurrency=1)
    assert raised.group_contains(RuntimeError, match="crash")
    done = load_results(out)
    assert len(done) >= 3 and not load_progress(out).complete
    with (out / RESULTS).open("ab") as results:  # the crash hit while a line was being appended
        results.write(b'{"kind": "item", "pack": "replay-te')
    resumed = MarkedModel()
    await run_replay(plan, [CANDIDATE], topics, resumed, out, concurrency=1)
    report = await finish_replay(plan, [CANDIDATE], topics, out)
    assert deterministic(report) == deterministic(through)
    assert (out / "changes.jsonl").read_bytes() == (tmp_path / "through" / "changes.jsonl").read_bytes()
    assert crashing.calls - 1 + resumed.calls == 7  # no item the crashed run finished was scored again
    assert load_progress(out).complete


async def test_a_finished_replay_is_not_run_again(tmp_path: Path) -> None:
    topics = await scenario()
    first = await replay_all(topics, tmp_path)
    again = MarkedModel()
    second = await replay_all(topics, tmp_path, again)
    assert again.calls == 0
    assert deterministic(second) == deterministic(first)


async def test_a_rerun_with_other_arguments_is_refused(tmp_path: Path) -> None:
    topics = await scenario()
    await plan_replay(request(tmp_path), [CANDIDATE], topics)
    other = dataclasses.replace(request(tmp_path), to_time=T0 + timedelta(minutes=90))
    with pytest.raises(ConfigError, match=r"holds a replay with other arguments: --to") as raised:
        await plan_replay(other, [CANDIDATE], topics)
    assert "\n" not in str(raised.value)
    with pytest.raises(ConfigError, match="the packs"):
        await plan_replay(request(tmp_path, LIVE), [LIVE], topics)


async def test_a_range_the_topics_no_longer_hold_is_named_first(tmp_path: Path) -> None:
    topics = MemoryTopics()
    topics.log_starts[(TOPICS.listings, 0)] = 40  # retention deleted offsets 0-39
    topics.add(TOPICS.listings, 0, listing_value("L-5", "spam-score 0.6 mug"), at(50))
    topics.add(TOPICS.verdicts, 0, b"not a verdict", at(51))
    report = await replay_all(topics, tmp_path)
    [gap] = report.retention_gaps
    assert (gap.topic, gap.partition, gap.log_start, gap.earliest) == (
        TOPICS.listings,
        0,
        40,
        T0 + timedelta(minutes=50),
    )
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert lines[2].startswith(f"**Not retained:** `{TOPICS.listings}` partition 0 holds records only from")
    assert report.packs[0].without_live_verdict == 1


async def test_the_join_takes_live_automated_verdicts_in_the_window() -> None:
    topics = MemoryTopics()
    value = listing_value("L-1", "spam-score 0.6 mug")
    record = topics.add(TOPICS.listings, 0, value, at(0))
    verdict = await live_verdict(value, record)
    key = ("listing", "L-1", 0)
    found = LiveVerdicts()
    window = (at(0), at(60))
    for payload, minute in (
        (verdict.model_copy(update={"decision": "reject"}), 1),
        (verdict, 2),  # the last live verdict of a revision stands
        (verdict.model_copy(update={"mode": "shadow", "kind": "shadow", "decision": "approve"}), 3),
        (verdict.model_copy(update={"revision": 1, "decision": "approve"}), 4),  # another revision
        (verdict.model_copy(update={"decision": "approve"}), 61),  # after the window
    ):
        found.add(
            topics.add(TOPICS.verdicts, 0, orjson.dumps(payload.model_dump(mode="json")), at(minute)),
            {key},
            window,
        )
    found.add(topics.add(TOPICS.verdicts, 0, b"{}", at(5)), {key}, window)
    assert found.by_revision == {key: verdict}
    assert (found.read, found.other_kinds, found.undecodable) == (3, 1, 1)


def test_a_pack_for_verticals_replays_only_their_items() -> None:
    health = dataclasses.replace(CANDIDATE, verticals=("Health",))
    assert applies(health, listing(category_path=["health", "Vitamins"]))
    assert not applies(health, listing(category_path=["Home"]))
    assert applies(CANDIDATE, listing(category_path=["Home"]))


async def test_labels_give_precision_recall_and_f1_of_both_sides(tmp_path: Path) -> None:
    labels = load_labels(write_labels(tmp_path / "labels.jsonl"), [CANDIDATE])
    report = await replay_all(await scenario(), tmp_path / "out", labels=labels)
    labeled = report.packs[0].labeled
    assert labeled is not None
    # L-2, L-4, L-5, L-6, L-7, L-9 labeled; L-3 not; L-99 not replayed (the video: other type).
    assert (labeled.labeled, labeled.unlabeled, labeled.labels_unmatched) == (6, 1, 1)
    assert (labeled.without_live_verdict, labeled.live_errors, labeled.candidate_errors) == (1, 0, 0)
    assert (labeled.compared, labeled.violating) == (5, 4)  # L-7 has no live verdict
    # Flagged (review or reject) against violating, over L-2, L-4, L-5, L-6, L-9:
    # live approves L-2 (fn), flags clean L-5 (fp), flags L-4, L-6, L-9 (tp).
    live = labeled.live
    assert (live.tp, live.fp, live.fn, live.tn) == (3, 1, 1, 0)
    assert (live.precision, live.recall, live.f1) == (3 / 4, 3 / 4, 3 / 4)
    # The candidate reviews L-2 too.
    candidate = labeled.candidate
    assert (candidate.tp, candidate.fp, candidate.fn, candidate.tn) == (4, 1, 0, 0)
    assert (candidate.precision, candidate.recall, candidate.f1) == (4 / 5, 1.0, 8 / 9)
    # Per category, a side flags what its verdict names: the pre-rule on L-4 names none.
    spam, adult = labeled.categories
    assert (spam.live.tp, spam.live.fp, spam.live.fn) == (2, 1, 2)
    assert (spam.live.precision, spam.live.recall, spam.live.f1) == (2 / 3, 2 / 4, 4 / 7)
    assert (spam.candidate.tp, spam.candidate.fp, spam.candidate.fn) == (3, 1, 1)
    assert (adult.category, adult.live.tn, adult.candidate.f1) == ("adult", 5, 0.0)
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| violation, live | 75.0% | 75.0% | 0.750 | 3 | 1 | 1 | 0 |" in markdown
    assert "| violation, candidate | 80.0% | 100.0% | 0.889 | 4 | 1 | 0 | 0 |" in markdown
    assert "6 replayed items have a label, 1 have none; 1 labels" in markdown
    assert ReplayReport.model_validate_json((tmp_path / "out" / "report.json").read_bytes()) == report


async def test_items_decided_by_an_error_are_left_out_of_the_labeled_figures(tmp_path: Path) -> None:
    labels = load_labels(write_labels(tmp_path / "labels.jsonl"), [CANDIDATE])
    await replay_all(await scenario(), tmp_path / "out")
    items = [i for i in load_results(tmp_path / "out") if isinstance(i, ReplayedItem)]
    live = LiveVerdicts()
    for line in (tmp_path / "out" / LIVE_VERDICTS).read_bytes().splitlines():
        verdict = Verdict.model_validate_json(line)
        live.by_revision[(verdict.content_type, verdict.content_id, verdict.revision)] = verdict
    error = DecidedBy(kind="error", id="timeout")
    failed = [i.model_copy(update={"decided_by": error}) if i.content_id == "L-2" else i for i in items]
    live.by_revision[("listing", "L-5", 0)] = live.by_revision[("listing", "L-5", 0)].model_copy(
        update={"decided_by": error}
    )
    labeled = pack_report(CANDIDATE, failed, live.by_revision, shown=0, labels=labels).labeled
    assert labeled is not None
    assert (labeled.live_errors, labeled.candidate_errors, labeled.compared) == (1, 1, 3)
    # Left: L-4, L-6, L-9, all violating and flagged on both sides.
    assert (labeled.live.tp, labeled.live.fp, labeled.live.fn) == (3, 0, 0)
    assert labeled.candidate == labeled.live


async def test_a_bad_labels_file_is_one_line_naming_labels(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--labels: cannot read dataset") as missing:
        load_labels(tmp_path / "none.jsonl", [CANDIDATE])
    bad = write_labels(tmp_path / "bad.jsonl", {"L-2": ["nope"]})
    unknown_says = r"^--labels: .*categories not defined in replay-test: 'nope'"
    with pytest.raises(ConfigError, match=unknown_says) as unknown:
        load_labels(bad, [CANDIDATE])
    bad.write_bytes(b"not json\n{}\n")
    lines_say = r"^--labels: 2 bad line\(s\) in dataset .*; the first: .*:1: not valid JSON"
    with pytest.raises(ConfigError, match=lines_say) as lines:
        load_labels(bad, [CANDIDATE])
    for raised in (missing, unknown, lines):
        assert "\n" not in str(raised.value)
