from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

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
    ModelServer,
    ServerUnreachable,
    check_categories,
    check_server,
    load_dataset,
    plan_evaluation,
    run_evaluation,
)
from streamproc.inference.protocol import ModelAnswer, ModelRequest, TokenChoice
from streamproc.policy import load_pack
from tests.factories import listing_dict, video_dict
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


def _run(tmp_path: Path, policies: list[Path], compare: Path | None = None) -> list[Any]:
    plan = plan_evaluation(policies, DATASET, tmp_path / "out", compare)
    done: list[int] = []
    reports = run_evaluation(
        plan,
        ModelServer(base_url="http://model.invalid/v1", model="fake"),
        InferenceSettings(),
        model=FakeModel(),
        on_done=lambda: done.append(1),
    )
    assert len(done) == plan.requests
    return reports


def test_report_numbers_recompute_from_its_items(tmp_path: Path) -> None:
    [report] = _run(tmp_path, [LISTINGS])
    out = tmp_path / "out"
    assert report.directory == out
    data = orjson.loads((out / "report.json").read_bytes())
    [pack] = data["packs"]
    items = load_dataset(DATASET)
    listings = [i for i in items if i.content_type == "listing"]
    assert pack["items_total"] == len(listings) and pack["skipped_other_content_type"] == len(items) - len(
        listings
    )
    assert [i["id"] for i in pack["items"]] == [i.id for i in listings]

    # The inference error is listed, fails closed, and is left out of every number.
    assert pack["errors"] == 1 and pack["error_items"][0]["id"] == "listing:L-3010:0"
    errored = next(i for i in pack["items"] if i["id"] == "listing:L-3010:0")
    assert errored["decision"] == "review" and errored["error"] == "timeout"
    evaluated = [i for i in pack["items"] if i["error"] is None]
    assert pack["evaluated"] == len(evaluated) == len(listings) - 1

    check_report_section(pack, out)
    for category, entry in pack["categories"].items():
        assert entry["review_threshold"] == next(
            c.thresholds.review for c in load_pack(LISTINGS).categories if c.id == category
        )

    # Pre-rules decide without the model: no scores, and the rule's category is flagged.
    blocked = next(i for i in pack["items"] if i["id"] == "listing:L-3015:0")
    assert blocked["decided_by"] == {"kind": "rule", "id": "blocked-terms"} and blocked["scores"] == {}
    anomaly = next(i for i in pack["items"] if i["id"] == "listing:L-3035:0")
    assert anomaly["decided_by"]["id"] == "branded-price-anomaly" and anomaly["flagged_categories"] == [
        "counterfeit"
    ]

    decisions = pack["decisions"]
    counts = {d: sum(1 for i in evaluated if i["decision"] == d) for d in ("approve", "review", "reject")}
    assert {d: decisions[d] for d in counts} == counts
    assert decisions["automation_rate"] == pytest.approx(
        (counts["approve"] + counts["reject"]) / len(evaluated)
    )
    matrix = pack["confusion_matrix"]
    assert sum(sum(row.values()) for row in matrix["counts"].values()) == sum(
        max(1, len(i["true_categories"])) for i in evaluated
    )
    assert matrix["counts"]["counterfeit"]["(rule)"] >= 1  # L-3015, rejected by a rule naming no category

    markdown = (out / "report.md").read_text()
    assert "| category | precision | recall | F1 | support | tp | fp | fn | tn |" in markdown
    assert "automation rate" in markdown and "### Threshold sweep" in markdown
    assert "`listing:L-3010:0` (line 10): timeout" in markdown
    assert "![counterfeit](pr_counterfeit.png)" in markdown
    assert "comparison" not in data


def test_compare_puts_both_packs_side_by_side(tmp_path: Path) -> None:
    stricter = tmp_path / "listings-strict.yaml"
    stricter.write_text(
        LISTINGS.read_text().replace(
            "thresholds: {reject: 0.85, review: 0.5}", "thresholds: {reject: 0.6, review: 0.2}"
        )
    )
    _run(tmp_path, [LISTINGS], compare=stricter)
    data = orjson.loads((tmp_path / "out" / "report.json").read_bytes())
    base, other = data["packs"]
    assert base["name"] == other["name"] and base["version"] != other["version"]
    assert (base["label"], other["label"]) == (base["version"], other["version"])
    comparison = data["comparison"]
    for category, delta in comparison["category_deltas"].items():
        assert delta["recall"] == pytest.approx(
            other["categories"][category]["recall"] - base["categories"][category]["recall"]
        )
    theirs = {i["id"]: i for i in other["items"]}
    expected = [
        i["id"]
        for i in base["items"]
        if (i["decision"], i["flagged_categories"])
        != (theirs[i["id"]]["decision"], theirs[i["id"]]["flagged_categories"])
    ]
    assert expected and [d["id"] for d in comparison["decision_differences"]] == expected
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"## Comparison: {other['version']} against {base['version']}" in markdown
    assert f"### Items decided differently ({len(expected)})" in markdown
    assert sum(1 for _ in (tmp_path / "out").glob("pr_*.png")) == len(data["categories"])


def test_several_packs_get_one_report_folder_each(tmp_path: Path) -> None:
    reports = _run(tmp_path, [LISTINGS, VIDEOS])
    assert [r.directory.name for r in reports] == ["marketplace-listings", "short-videos"]
    for report in reports:
        assert (report.directory / "report.json").is_file() and (report.directory / "report.md").is_file()
    videos = orjson.loads((tmp_path / "out" / "short-videos" / "report.json").read_bytes())["packs"][0]
    assert videos["content_type"] == "video" and videos["skipped_other_content_type"] == sum(
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
    assert result.exit_code == 2 and "--vllm-python and --model-dir go together" in result.output
