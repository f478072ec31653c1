from __future__ import annotations

import hashlib
import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, precision_recall_curve, precision_recall_fscore_support

from streamproc.accuracy.curves import (
    SWEEP_THRESHOLDS,
    average_precision,
    best_f1,
    pr_curve,
    threshold_sweep,
)
from streamproc.cli import cli
from streamproc.config import InferenceSettings
from streamproc.dev.devstack import free_port
from streamproc.errors import ConfigError, InferenceTimeout
from streamproc.evaluation import (
    DatasetError,
    DecidedByRef,
    EvalReport,
    InPackCategory,
    OutOfPackCategory,
    RunReport,
    ServedModel,
    ServerUnreachable,
    WrittenReport,
    check_categories,
    check_server,
    load_dataset,
    plan_evaluation,
    run_evaluation,
)
from streamproc.inference.protocol import ModelAnswer, ModelRequest, TokenChoice
from streamproc.policy import load_pack
from tests.factories import label_pack, listing_dict, video_dict
from tests.sklearn_reference import check_report_section

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "samples" / "labeled.jsonl"
LISTINGS = ROOT / "policies" / "listings.yaml"
VIDEOS = ROOT / "policies" / "videos.yaml"
LABELS = "ABCDEFGN"


def line(content_type: str = "listing", truth: list[str] | None = None, **event: Any) -> dict[str, Any]:
    made = listing_dict(**event) if content_type == "listing" else video_dict(**event)
    return {"content_type": content_type, "event": made, "true_categories": truth or []}


def write_lines(path: Path, *lines: dict[str, Any] | str) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


# --- dataset -------------------------------------------------------------------------------


def test_shipped_dataset_loads_and_uses_only_the_packs_categories() -> None:
    items = load_dataset(DATASET)
    assert 40 <= len(items) <= 60
    listings = [i for i in items if i.content_type == "listing"]
    videos = [i for i in items if i.content_type == "video"]
    check_categories(DATASET, listings, [load_pack(LISTINGS)])
    check_categories(DATASET, videos, [load_pack(VIDEOS)])
    for subset in (listings, videos):
        assert any(not i.true_categories for i in subset) and any(i.true_categories for i in subset)


def test_every_bad_line_is_named_with_its_problem_and_fix(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "bad.jsonl",
        line(listing_id="L-1"),
        "{not json",
        "[1, 2]",
        {"content_type": "listing", "event": listing_dict(listing_id="L-2")},
        {"content_type": "podcast", "event": {}, "true_categories": []},
        {"content_type": "listing", "event": listing_dict(listing_id="L-3"), "true_categories": "spam"},
        line(listing_id="L-4", price={"amount": "-1", "currency": "USD"}),
        line(listing_id="L-1"),
        "",
        {"content_type": "listing", "event": listing_dict(listing_id="L-5"), "true_categories": [], "x": 1},
    )
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    message = str(caught.value)
    assert message.startswith(f"8 bad line(s) in dataset {path}:")
    assert f"{path}:2: not valid JSON" in message
    assert f"{path}:3: a JSON list, not an object" in message
    assert f"{path}:4: missing ['true_categories'] keys" in message
    assert f"{path}:5: content_type 'podcast' is neither" in message
    assert f"{path}:6: true_categories must be a list" in message and "use [] for an item" in message
    assert f"{path}:7: event: 1 invalid field(s) in listing event: price.amount" in message
    assert f"{path}:8: item listing:L-1:0 already appears on line 1" in message
    assert f"{path}:10: unknown ['x'] keys" in message
    assert '"true_categories": [...]' in message  # the expected format, as the fix


def test_an_empty_dataset_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="has no items"):
        load_dataset(write_lines(tmp_path / "empty.jsonl", ""))


def test_categories_the_pack_does_not_define_are_named_with_their_lines(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "d.jsonl",
        line(listing_id="L-1", truth=["counterfeit"]),
        line(listing_id="L-2", truth=["weapons", "spam"]),
        line(listing_id="L-3", truth=["weapons"]),
        line(listing_id="L-4", truth=["dangerous_acts"]),
    )
    with pytest.raises(DatasetError) as caught:
        check_categories(path, load_dataset(path), [load_pack(LISTINGS)])
    message = str(caught.value)
    assert "categories not defined in marketplace-listings" in message
    assert "'dangerous_acts' (line 4)" in message and "'weapons' (lines 2, 3)" in message
    assert "'counterfeit'" in message.split("use the pack's category ids")[1]  # the known ids, as the fix


def test_cli_reports_dataset_errors_and_exits_non_zero(tmp_path: Path) -> None:
    data = write_lines(tmp_path / "d.jsonl", line(listing_id="L-1"), "{oops")
    result = CliRunner().invoke(
        cli, ["eval", "--policy", str(LISTINGS), "--data", str(data), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert f"{data}:2: not valid JSON" in result.output


def test_a_pack_with_no_items_of_its_content_type_is_an_error(tmp_path: Path) -> None:
    data = write_lines(tmp_path / "d.jsonl", line("video", video_id="V-1"))
    with pytest.raises(ConfigError, match="no listing items for pack marketplace-listings"):
        plan_evaluation([LISTINGS], data, tmp_path / "out")


def test_compare_needs_packs_of_one_content_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="compare packs of one content type"):
        plan_evaluation([LISTINGS], DATASET, tmp_path, compare=VIDEOS)


def test_a_missing_matplotlib_is_named_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("streamproc.evaluation.command.find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'streamproc\[plots\]'"):
        plan_evaluation([LISTINGS], DATASET, tmp_path / "out")


# --- curves against scikit-learn --------------------------------------------------------------


def _random_case(seed: int, n: int = 60) -> tuple[list[bool], list[float]]:
    rng = random.Random(seed)
    truth = [rng.random() < 0.3 for _ in range(n)]
    # Rounded so that ties occur, as with real scores.
    scores = [round(min(1.0, max(0.0, rng.gauss(0.6 if t else 0.3, 0.25))), 2) for t in truth]
    return truth, scores


@pytest.mark.parametrize("seed", range(5))
def test_threshold_sweep_matches_scikit_learn(seed: int) -> None:
    truth, scores = _random_case(seed)
    points = threshold_sweep(truth, scores)
    assert [p.threshold for p in points] == list(SWEEP_THRESHOLDS)
    assert SWEEP_THRESHOLDS[0] == 0.05 and SWEEP_THRESHOLDS[-1] == 0.95 and len(SWEEP_THRESHOLDS) == 19
    for point in points:
        predicted = [s >= point.threshold for s in scores]
        p, r, f, _ = precision_recall_fscore_support(truth, predicted, average="binary", zero_division=0)
        assert (point.precision, point.recall, point.f1) == pytest.approx((p, r, f))
    best = best_f1(points)
    assert best is not None and best.f1 == max(p.f1 for p in points)


@pytest.mark.parametrize("seed", range(5))
def test_pr_curve_and_average_precision_match_scikit_learn(seed: int) -> None:
    truth, scores = _random_case(seed)
    curve = pr_curve(truth, scores)
    precision, recall, thresholds = precision_recall_curve(truth, scores)
    assert list(curve.thresholds) == pytest.approx(list(thresholds))
    assert list(curve.precision) == pytest.approx(list(precision))
    assert list(curve.recall) == pytest.approx(list(recall))
    assert average_precision(curve) == pytest.approx(average_precision_score(truth, scores))


def test_pr_curve_without_positives_follows_scikit_learn() -> None:
    truth, scores = [False, False, False], [0.1, 0.4, 0.4]
    curve = pr_curve(truth, scores)
    with pytest.warns(UserWarning, match="No positive class"):
        precision, recall, _ = precision_recall_curve(truth, scores)
    assert list(curve.precision) == pytest.approx(list(precision))
    assert list(curve.recall) == pytest.approx(list(recall))


def test_best_f1_prefers_the_highest_threshold_among_equals_and_none_when_nothing_is_found() -> None:
    # Positives at 0.9 only; 0.5 and 0.8 both flag exactly them.
    points = threshold_sweep([True, False], [0.9, 0.2], [0.5, 0.8, 0.95])
    best = best_f1(points)
    assert best is not None and (best.threshold, best.f1) == (0.8, 1.0)
    assert best_f1(threshold_sweep([True, False], [0.1, 0.2], [0.5])) is None


def test_sweep_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 truth values but 1 scores"):
        threshold_sweep([True, False], [0.5])


# --- running and the report, with a fake model -------------------------------------------------


class FakeModel:
    """Label probabilities drawn from a hash of the request (repeatable), or an error."""

    def __init__(self, fail_on: str = "Gaming chair") -> None:
        self.fail_on = fail_on
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        self.calls += 1
        text = json.dumps(request.body)
        if self.fail_on in text:
            raise InferenceTimeout("the model server did not answer within 30 s")
        rng = random.Random(hashlib.sha256(text.encode()).digest())
        weights = [rng.random() ** 3 for _ in LABELS]
        total = sum(weights)
        top = tuple(
            sorted(
                ((label, math.log(w / total)) for label, w in zip(LABELS, weights, strict=True)),
                key=lambda x: -x[1],
            )
        )
        return ModelAnswer(
            top[0][0], (TokenChoice(top[0][0], top[0][1], top),), prompt_tokens=10, completion_tokens=1
        )


def _run(tmp_path: Path, policies: list[Path], compare: Path | None = None) -> list[WrittenReport]:
    """Evaluates copies of the packs scored with ``label_logprob``: FakeModel answers label letters."""
    packs = tmp_path / "label-packs"
    plan = plan_evaluation(
        [label_pack(p, packs) for p in policies],
        DATASET,
        tmp_path / "out",
        label_pack(compare, packs) if compare else None,
    )
    done: list[int] = []
    written = run_evaluation(
        plan,
        InferenceSettings(base_url="http://model.invalid/v1", model="fake"),
        model=FakeModel(),
        on_done=lambda: done.append(1),
    )
    assert len(done) == plan.requests
    return written


def _read(directory: Path) -> tuple[EvalReport, dict[str, Any]]:
    """report.json as the typed report and as plain JSON (what people's tooling reads)."""
    raw = (directory / "report.json").read_bytes()
    return EvalReport.model_validate_json(raw), orjson.loads(raw)


def _candidate(tmp_path: Path, *, drop_misleading_claims: bool = False) -> Path:
    """The listings pack with lower thresholds; optionally without one of its categories."""
    text, lowered = re.subn(
        r"thresholds: \{[^}]*\}", "thresholds: {reject: 0.6, review: 0.2}", LISTINGS.read_text()
    )
    assert lowered == len(load_pack(LISTINGS).categories)
    # Hand-set thresholds: the shipped calibration's provenance no longer describes them.
    text = text[: text.index("calibration_provenance:")]
    if drop_misleading_claims:
        start = text.index("  - id: misleading_claims")
        text = text[:start] + text[text.index("  - id: spam") :]
    path = tmp_path / "listings-candidate.yaml"
    path.write_text(text)
    return path


def _check_model_figures(pack: RunReport) -> None:
    """The figures check_report_section leaves out, against scikit-learn: the review-threshold
    point, average precision and the best-F1 threshold of the model's scores."""
    scored = [i for i in pack.items if i.error is None and i.scores]
    for category, entry in pack.categories.items():
        if not isinstance(entry, InPackCategory):
            continue
        truth = [category in i.true_categories for i in scored]
        scores = [i.scores[category] for i in scored]
        at_review = [s >= entry.review_threshold for s in scores]
        p, r, f, _ = precision_recall_fscore_support(truth, at_review, average="binary", zero_division=0)
        point = entry.model_at_review_threshold
        assert (point.precision, point.recall, point.f1) == pytest.approx((p, r, f)), category
        assert entry.average_precision == pytest.approx(average_precision_score(truth, scores)), category
        top = max(p.f1 for p in entry.sweep)
        assert top > 0 and entry.best_f1 == top
        assert entry.best_f1_threshold == max(p.threshold for p in entry.sweep if p.f1 == top)


def test_report_numbers_recompute_from_its_items(tmp_path: Path) -> None:
    [written] = _run(tmp_path, [LISTINGS])
    out = tmp_path / "out"
    assert written.directory == out
    report, data = _read(out)
    assert report == written.report  # the file holds the report, nothing lost
    assert report.model == ServedModel(name="fake", base_url="http://model.invalid/v1")
    [pack] = report.packs
    items = load_dataset(DATASET)
    listings = [i for i in items if i.content_type == "listing"]
    assert report.dataset.items == len(items)
    assert pack.items_total == len(listings)
    assert pack.skipped_other_content_type == len(items) - len(listings)
    assert [i.id for i in pack.items] == [i.id for i in listings]
    by_id = {i.id: i for i in pack.items}

    # The inference error is listed, fails closed, and is left out of every number.
    assert pack.errors == 1 and [e.id for e in pack.error_items] == ["listing:L-3010:0"]
    errored = by_id["listing:L-3010:0"]
    assert errored.decision == "review" and errored.error == "timeout"
    evaluated = [i for i in pack.items if i.error is None]
    assert pack.evaluated == len(evaluated) == len(listings) - 1
    assert pack.scored_by_model == sum(1 for i in evaluated if i.scores)

    check_report_section(data["packs"][0], out)  # scikit-learn, on the file's own items
    _check_model_figures(pack)
    thresholds = {c.id: c.thresholds for c in load_pack(LISTINGS).categories}
    assert list(pack.categories) == list(report.categories) == list(thresholds)
    for category, entry in pack.categories.items():
        assert isinstance(entry, InPackCategory)
        assert (entry.review_threshold, entry.reject_threshold) == (
            thresholds[category].review,
            thresholds[category].reject,
        )

    # Pre-rules decide without the model: no scores, and the rule's category is flagged.
    blocked = by_id["listing:L-3015:0"]
    assert blocked.decided_by == DecidedByRef(kind="rule", id="blocked-terms") and blocked.scores == {}
    anomaly = by_id["listing:L-3035:0"]
    assert anomaly.decided_by.id == "branded-price-anomaly"
    assert anomaly.flagged_categories == ("counterfeit",)

    decisions = pack.decisions
    counts = {d: sum(1 for i in evaluated if i.decision == d) for d in ("approve", "review", "reject")}
    assert (decisions.approve, decisions.review, decisions.reject) == tuple(counts.values())
    assert decisions.automation_rate == pytest.approx((counts["approve"] + counts["reject"]) / len(evaluated))
    assert decisions.approved_violating == sum(
        1 for i in evaluated if i.decision == "approve" and i.true_categories
    )
    assert decisions.rejected_clean == sum(
        1 for i in evaluated if i.decision == "reject" and not i.true_categories
    )
    matrix = pack.confusion_matrix
    assert matrix.rows == (*report.categories, "none")
    assert matrix.columns == (*report.categories, "(rule)", "none")
    assert sum(sum(row.values()) for row in matrix.counts.values()) == sum(
        max(1, len(i.true_categories)) for i in evaluated
    )
    assert matrix.counts["counterfeit"]["(rule)"] >= 1  # L-3015, rejected by a rule naming no category
    assert matrix.counts["none"]["none"] == sum(
        1 for i in evaluated if not i.true_categories and i.decision == "approve"
    )

    markdown = (out / "report.md").read_text()
    assert "| category | precision | recall | F1 | support | tp | fp | fn | tn |" in markdown
    assert "automation rate" in markdown and "### Threshold sweep" in markdown
    assert f"{decisions.automation_rate:.1%}" in markdown
    assert "`listing:L-3010:0` (line 10): timeout" in markdown
    assert "![counterfeit](pr_counterfeit.png)" in markdown
    assert report.comparison is None and "comparison" not in data


def test_compare_puts_both_packs_side_by_side(tmp_path: Path) -> None:
    _run(tmp_path, [LISTINGS], compare=_candidate(tmp_path))
    out = tmp_path / "out"
    report, data = _read(out)
    base, other = report.packs
    assert base.name == other.name and base.version != other.version
    assert (base.label, other.label) == (base.version, other.version)
    comparison = report.comparison
    assert comparison is not None and (comparison.base, comparison.other) == (base.label, other.label)
    for pack in data["packs"]:
        check_report_section(pack, out)
    assert list(comparison.category_deltas) == list(report.categories)
    for category, delta in comparison.category_deltas.items():
        mine, theirs = base.categories[category], other.categories[category]
        assert delta.recall == pytest.approx(theirs.recall - mine.recall)
        assert (delta.tp, delta.fp, delta.fn) == (
            theirs.tp - mine.tp,
            theirs.fp - mine.fp,
            theirs.fn - mine.fn,
        )
    assert comparison.automation_rate_delta == pytest.approx(
        other.decisions.automation_rate - base.decisions.automation_rate
    )
    theirs_by_id = {i.id: i for i in other.items}
    expected = [
        i.id
        for i in base.items
        if (i.decision, i.flagged_categories)
        != (theirs_by_id[i.id].decision, theirs_by_id[i.id].flagged_categories)
    ]
    assert expected and [d.id for d in comparison.decision_differences] == expected
    first = comparison.decision_differences[0]
    assert first.base.decision == base.items[[i.id for i in base.items].index(first.id)].decision
    markdown = (out / "report.md").read_text()
    assert f"## Comparison: {other.version} against {base.version}" in markdown
    assert f"### Items decided differently ({len(expected)})" in markdown
    assert sum(1 for _ in out.glob("pr_*.png")) == len(report.categories)


def test_a_category_only_one_compared_pack_has_is_counted_but_not_swept(tmp_path: Path) -> None:
    _run(tmp_path, [LISTINGS], compare=_candidate(tmp_path, drop_misleading_claims=True))
    out = tmp_path / "out"
    report, data = _read(out)
    base, other = report.packs
    assert isinstance(base.categories["misleading_claims"], InPackCategory)
    outside = other.categories["misleading_claims"]
    assert isinstance(outside, OutOfPackCategory) and not outside.in_pack
    # Nothing flags a category the pack lacks; its violations are all missed.
    assert (outside.tp, outside.fp, outside.fn) == (0, 0, outside.support) and outside.support > 0
    assert set(data["packs"][1]["categories"]["misleading_claims"]) == _COUNTS
    assert "| misleading_claims | not in pack |" in (out / "report.md").read_text()
    assert (out / "pr_misleading_claims.png").is_file()  # the base pack's curve alone


def test_the_report_round_trips_through_json(tmp_path: Path) -> None:
    [alone] = _run(tmp_path / "alone", [LISTINGS])
    [compared] = _run(tmp_path / "compared", [LISTINGS], _candidate(tmp_path, drop_misleading_claims=True))
    for written in (alone, compared):
        report = written.report
        again = EvalReport.model_validate_json(report.model_dump_json())
        assert again == report
        # The same kinds come back, not only equal-looking values.
        assert [type(e) for p in again.packs for e in p.categories.values()] == [
            type(e) for p in report.packs for e in p.categories.values()
        ]
        assert again.generated_at == report.generated_at and again.generated_at.tzinfo is not None
    assert alone.report.comparison is None and compared.report.comparison is not None


_COUNTS = {"in_pack", "precision", "recall", "f1", "support", "tp", "fp", "fn", "tn"}


def test_report_json_keeps_its_shape(tmp_path: Path) -> None:
    """The keys people's tooling reads; a renamed field must fail here, not in their scripts."""
    _run(tmp_path, [LISTINGS], compare=_candidate(tmp_path, drop_misleading_claims=True))
    data = orjson.loads((tmp_path / "out" / "report.json").read_bytes())
    assert set(data) == {"dataset", "model", "generated_at", "categories", "packs", "comparison"}
    assert set(data["dataset"]) == {"path", "items"} and set(data["model"]) == {"name", "base_url"}
    assert data["generated_at"].endswith("+00:00")
    pack = data["packs"][0]
    assert set(pack) == {
        "name", "version", "label", "content_type", "items_total", "evaluated",
        "skipped_other_content_type", "errors", "error_items", "scored_by_model", "categories",
        "decisions", "confusion_matrix", "items", "scorer", "violation",
        "calibration",  # the shipped pack's calibration_provenance; left out for a pack without one
    }  # fmt: skip
    assert set(pack) - set(data["packs"][1]) == {"calibration"}  # the hand-edited candidate has none
    assert set(pack["violation"]) == {
        "items", "violating", "system", "rules_only", "all_approve", "model_added",
        "flagged_by_pre_rules", "flagged_by_post_rules", "post_rule_flags_over_model_approval",
    }  # fmt: skip
    assert set(pack["violation"]["system"]) == {"precision", "recall", "f1", "tp", "fp", "fn", "tn", "cost"}
    assert set(pack["violation"]["system"]["cost"]) == {
        "requests", "prompt_tokens", "completion_tokens",
        "requests_per_item", "prompt_tokens_per_item", "completion_tokens_per_item",
    }  # fmt: skip
    assert set(pack["violation"]["model_added"]) == {"flagged", "violating", "clean"}
    assert set(pack["categories"]["counterfeit"]) == _COUNTS | {
        "review_threshold", "reject_threshold", "model_at_review_threshold", "best_f1_threshold",
        "best_f1", "average_precision", "sweep", "pr_curve",
    }  # fmt: skip
    assert set(pack["categories"]["counterfeit"]["sweep"][0]) == {
        "threshold", "precision", "recall", "f1", "tp", "fp", "fn", "tn"
    }  # fmt: skip
    assert set(pack["categories"]["counterfeit"]["pr_curve"]) == {"precision", "recall", "thresholds"}
    assert set(pack["decisions"]) == {
        "approve", "review", "reject", "automation_rate", "approved_violating", "rejected_clean"
    }  # fmt: skip
    assert set(pack["confusion_matrix"]) == {"rows", "columns", "counts"}
    assert set(pack["items"][0]) == {
        "id", "line", "true_categories", "scores", "decision", "decided_by", "reason_code",
        "flagged_categories", "error", "rule_stage", "model_decision", "requests", "prompt_tokens",
        "completion_tokens",
    }  # fmt: skip
    assert set(pack["items"][0]["decided_by"]) == {"kind", "id"}
    assert set(pack["error_items"][0]) == {"id", "line", "error"}
    comparison = data["comparison"]
    assert set(comparison) == {
        "base", "other", "category_deltas", "automation_rate_delta", "decision_differences",
        "violation_delta",
    }  # fmt: skip
    assert set(comparison["violation_delta"]) == {
        "precision", "recall", "f1", "tp", "fp", "fn", "requests_per_item", "prompt_tokens_per_item"
    }  # fmt: skip
    assert set(comparison["category_deltas"]["spam"]) == {"precision", "recall", "f1", "tp", "fp", "fn"}
    difference = comparison["decision_differences"][0]
    assert set(difference) == {"id", "line", "true_categories", "base", "other"}
    assert set(difference["base"]) == {"decision", "flagged_categories", "decided_by"}


def test_several_packs_get_one_report_folder_each(tmp_path: Path) -> None:
    written = _run(tmp_path, [LISTINGS, VIDEOS])
    assert [w.directory.name for w in written] == ["marketplace-listings", "short-videos"]
    for report in written:
        assert (report.directory / "report.json").is_file() and (report.directory / "report.md").is_file()
    videos, _ = _read(tmp_path / "out" / "short-videos")
    [pack] = videos.packs
    assert pack.content_type == "video" and pack.skipped_other_content_type == sum(
        i.content_type == "listing" for i in load_dataset(DATASET)
    )


# --- the model server ------------------------------------------------------------------------


async def test_an_unreachable_server_is_named_with_how_to_start_one() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ServerUnreachable) as caught:
        await check_server(url, "m")
    assert f"no model server answers at {url}" in str(caught.value) and "make eval" in str(caught.value)


def test_cli_fails_clearly_when_the_server_is_down(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "--policy",
            str(LISTINGS),
            "--data",
            str(DATASET),
            "--out",
            str(tmp_path),
            "--vllm-url",
            url,
        ],
    )
    assert result.exit_code == 1
    assert url in result.output and "make eval" in result.output


def test_cli_checks_its_server_options(tmp_path: Path) -> None:
    args = ["eval", "--policy", str(LISTINGS), "--data", str(DATASET), "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, [*args, "--vllm-python", str(DATASET)])
    assert (
        result.exit_code == 2 and "--vllm-python needs --model-dir or --embedding-model-dir" in result.output
    )
    result = CliRunner().invoke(cli, [*args, "--model-dir", str(tmp_path)])
    assert result.exit_code == 2 and "need --vllm-python" in result.output


class FakeVllm:
    """Stands in for streamproc.dev.devstack.VllmServer: records how it was started."""

    started: ClassVar[list[tuple[Path, Path, str, Path]]] = []
    stopped: ClassVar[int] = 0
    base_url: ClassVar[str] = ""

    def __init__(
        self,
        python: Path,
        model_dir: Path,
        served_model_name: str,
        log_path: Path,
        *,
        other_names: Any = (),
        pooling: bool = False,
        extra_args: Any = (),
    ) -> None:
        self.args = (python, model_dir, served_model_name, log_path)
        self.served_model_name, self.log_path = served_model_name, log_path
        self.other_names = tuple(other_names)
        self.pooling = pooling

    def launch(self) -> None:
        self.started.append(self.args)

    def wait_healthy(self, timeout: float = 600.0) -> None:
        pass

    def stop(self) -> None:
        type(self).stopped += 1


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> type[FakeVllm]:
    monkeypatch.setattr(FakeVllm, "started", [])
    monkeypatch.setattr(FakeVllm, "stopped", 0)
    # Nothing answers there: the evaluation stops at its server check, naming the URL it was given.
    monkeypatch.setattr(FakeVllm, "base_url", f"http://127.0.0.1:{free_port()}/v1")
    monkeypatch.setattr("streamproc.dev.devstack.VllmServer", FakeVllm)
    return FakeVllm


def test_cli_starts_a_model_server_and_evaluates_against_it(
    tmp_path: Path, fake_vllm: type[FakeVllm]
) -> None:
    out = tmp_path / "out"
    (tmp_path / "tokenizer_config.json").write_text("{}")  # a model directory's, read for its tokens
    # A pack with a prompt scorer needs the generative server, the shipped ones the embedding
    # server: each run starts only what its packs need.
    for pack, role, log in ((label_pack(LISTINGS, tmp_path / "label"), "generative", "vllm.log"),
                            (LISTINGS, "embedding", "vllm-embedding.log")):  # fmt: skip
        fake_vllm.started.clear()
        args = ["eval", "--policy", str(pack), "--data", str(DATASET), "--out", str(out)]
        server = ["--vllm-python", str(tmp_path / "python"), "--model-dir", str(tmp_path),
                  "--model-name", "m", "--embedding-model-dir", str(tmp_path / "b"),
                  "--embedding-model-name", "m"]  # fmt: skip
        result = CliRunner().invoke(cli, [*args, *server])
        model_dir = tmp_path if role == "generative" else tmp_path / "b"
        assert fake_vllm.started == [(tmp_path / "python", model_dir, "m", out / log)]
        started = f"starting the {role} vLLM server (a few minutes on CPU; log in {out / log})"
        assert started in result.output
        assert f"{role} model server {fake_vllm.base_url} serving m" in result.output
        assert result.exit_code == 1 and f"no model server answers at {fake_vllm.base_url}" in result.output
    assert fake_vllm.stopped == 2


def test_cli_checks_the_dataset_before_starting_a_model_server(
    tmp_path: Path, fake_vllm: type[FakeVllm]
) -> None:
    data = write_lines(tmp_path / "d.jsonl", "{oops")
    server = ["--vllm-python", str(tmp_path / "python"), "--model-dir", str(tmp_path)]
    result = CliRunner().invoke(
        cli, ["eval", "--policy", str(LISTINGS), "--data", str(data), "--out", str(tmp_path), *server]
    )
    assert result.exit_code == 1 and f"{data}:1: not valid JSON" in result.output
    assert fake_vllm.started == []


def test_cli_names_a_missing_vllm_python(tmp_path: Path) -> None:
    python = tmp_path / "no-such-python"
    result = CliRunner().invoke(
        cli,
        ["eval", "--policy", str(LISTINGS), "--data", str(DATASET), "--out", str(tmp_path / "out"),
         "--vllm-python", str(python), "--embedding-model-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 1 and f"no vLLM python at {python}" in result.output


def test_evaluation_does_not_import_the_dev_harness() -> None:
    """Layering: the CLI starts model servers; evaluation only gets a base URL."""
    code = (
        "import sys, streamproc.evaluation; "
        "print(sorted(m for m in sys.modules if m.startswith(('streamproc.dev', 'streamproc.cli'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


class _Router:
    """Stands in for open_router: FakeModel behind an async context manager."""

    def __init__(self, *args: object) -> None:
        self.model = FakeModel()

    async def __aenter__(self) -> FakeModel:
        return self.model

    async def __aexit__(self, *exc: object) -> None:
        return None


def test_cli_puts_items_it_could_not_score_first_and_fails_past_the_allowed_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def reachable(*args: object, **kwargs: object) -> None:
        return None

    monkeypatch.setattr("streamproc.evaluation.runner.check_server", reachable)
    monkeypatch.setattr("streamproc.evaluation.runner.open_router", _Router)
    listings = label_pack(LISTINGS, tmp_path / "packs")
    args = [
        "eval",
        "--policy",
        str(listings),
        "--data",
        str(DATASET),
        "--vllm-url",
        "http://model.invalid/v1",
    ]
    failed = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert failed.exit_code == 1
    first = failed.output.splitlines()[0]
    assert re.fullmatch(r"1 of \d+ items \(\d+\.\d%\) could not be scored .*", first), first
    assert "more than --max-error-rate 0" in failed.output
    allowed = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "b"), "--max-error-rate", "0.5"])
    assert allowed.exit_code == 0, allowed.output
