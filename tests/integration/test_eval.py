"""`streamproc eval` on the shipped labeled dataset, against the real vLLM server.

The served model is a weak judge: these tests check that the report is computed correctly
from what the server answered, not that the answers are good.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from streamproc.dev.devstack import VllmServer
from streamproc.evaluation import OVERALL, EvalReport, EvalSummary, RunReport, ServedModel, load_dataset
from streamproc.policy import load_pack
from tests.factories import label_pack
from tests.integration.conftest import EMBEDDING_MODEL, SERVED_MODEL
from tests.sklearn_reference import check_report_section, check_violation_section

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "samples" / "labeled.jsonl"
LISTINGS = ROOT / "policies" / "listings.yaml"
VIDEOS = ROOT / "policies" / "videos.yaml"


def run_eval(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamproc", "eval", "--data", str(DATASET), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def read_report(directory: Path) -> EvalReport:
    """report.json as the typed report: validation fails on a missing, extra or mistyped key."""
    return EvalReport.model_validate_json((directory / "report.json").read_bytes())


def check_pack(pack: RunReport, directory: Path) -> None:
    """Every number in the pack's section equals scikit-learn's on the section's own items."""
    evaluated = [i for i in pack.items if i.error is None]
    assert pack.evaluated == len(evaluated) and pack.errors == len(pack.items) - len(evaluated)
    assert [e.id for e in pack.error_items] == [i.id for i in pack.items if i.error is not None]
    categories = load_pack(LISTINGS if pack.content_type == "listing" else VIDEOS).category_ids
    assert list(pack.categories) == list(categories)
    assert any(i.scores for i in evaluated), "the model scored no item"
    check_report_section(pack.model_dump(mode="json"), directory)
    decisions = pack.decisions
    assert decisions.approve + decisions.review + decisions.reject == len(evaluated)


def test_eval_reports_both_shipped_packs_with_numbers_that_recompute(
    embedding_server: VllmServer, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    result = run_eval(
        "--policy", LISTINGS, "--policy", VIDEOS, "--out", out,
        "--embedding-url", embedding_server.base_url, "--embedding-model-name", EMBEDDING_MODEL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    items = load_dataset(DATASET)
    listings = sum(1 for i in items if i.content_type == "listing")
    assert f"items evaluated, {len(items) - listings} of the other content type skipped" in result.stdout
    for name, content_type in (("marketplace-listings", "listing"), ("short-videos", "video")):
        directory = out / name
        report = read_report(directory)
        assert report.model == ServedModel(name=EMBEDDING_MODEL, base_url=embedding_server.base_url)
        [pack] = report.packs
        assert pack.content_type == content_type
        assert [i.id for i in pack.items] == [i.id for i in items if i.content_type == content_type]
        check_pack(pack, directory)
        assert "### Per category, at the pack's thresholds" in (directory / "report.md").read_text()
    listing_items = {i.id: i for i in read_report(out / "marketplace-listings").packs[0].items}
    # A pre-rule decides this one without a model call, exactly as in the worker.
    blocked = listing_items["listing:L-3015:0"]
    assert (blocked.decided_by.kind, blocked.decided_by.id) == ("rule", "blocked-terms")
    assert blocked.scores == {}
    assert (blocked.rule_stage, blocked.model_decision, blocked.requests) == ("pre", None, 0)
    scored = [i for i in listing_items.values() if i.scores]
    # The server's usage, kept per item: for the embedding_probe scorer, one request with the
    # item's text, tens of tokens, nothing generated.
    assert all(i.requests == 1 and i.prompt_tokens > 10 and i.completion_tokens == 0 for i in scored)
    check_summary(out, result.stdout)


def check_summary(out: Path, stdout: str) -> None:
    """summary.json: each pack's violation figures and all packs' items together, against
    scikit-learn; the console's last lines say the same."""
    summary = EvalSummary.model_validate_json((out / "summary.json").read_bytes())
    packs = [read_report(out / p.report).packs[0] for p in summary.packs]
    assert [p.violation for p in summary.packs] == [p.violation for p in packs]
    together = [i.model_dump(mode="json") for p in packs for i in p.items]
    check_violation_section({"items": together, "violation": summary.overall.model_dump(mode="json")})
    lines = stdout.splitlines()
    assert lines[-1] == f"summary: {out / 'summary.md'}"
    overall = summary.overall.system
    assert lines[-2].startswith(f"{OVERALL}: violation (flagged vs clean) over {summary.overall.items} items")
    assert f"system P {overall.precision:.2f} R {overall.recall:.2f} F1 {overall.f1:.2f}" in lines[-2]


def test_eval_compare_puts_two_versions_side_by_side(vllm: VllmServer, tmp_path: Path) -> None:
    # Both scored with label_logprob: one request per item instead of the channel scorer's
    # seven, as the point here is the comparison, and the test above runs the shipped scorer.
    labelled = label_pack(LISTINGS, tmp_path / "label-packs")
    candidate = tmp_path / "listings-candidate.yaml"
    text, lowered = re.subn(r"review: [0-9.]+\}", "review: 0.05}", labelled.read_text())
    assert lowered == len(load_pack(LISTINGS).categories)
    candidate.write_text(text)
    out = tmp_path / "compare"
    result = run_eval(
        "--policy", labelled, "--compare", candidate, "--out", out,
        "--vllm-url", vllm.base_url, "--model-name", SERVED_MODEL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = read_report(out)
    base, other = report.packs
    assert base.version != other.version
    for pack in (base, other):
        check_pack(pack, out)
    theirs = {i.id: i for i in other.items}
    differing = [
        i.id
        for i in base.items
        if (i.decision, i.flagged_categories) != (theirs[i.id].decision, theirs[i.id].flagged_categories)
    ]
    assert report.comparison is not None
    assert [d.id for d in report.comparison.decision_differences] == differing
    markdown = (out / "report.md").read_text()
    assert f"## Comparison: {other.version} against {base.version}" in markdown
    delta = report.comparison.violation_delta
    assert delta.f1 == pytest.approx(other.violation.system.f1 - base.violation.system.f1)
    assert (
        f"| F1 | {base.violation.system.f1:.2f} | {other.violation.system.f1:.2f} | {delta.f1:+.2f} |"
        in markdown
    )
    # The candidate lowers only the thresholds: pre-rules, before the model, flag the same items.
    assert other.violation.flagged_by_pre_rules == base.violation.flagged_by_pre_rules


def test_eval_names_the_models_the_server_serves_when_the_name_is_wrong(
    vllm: VllmServer, tmp_path: Path
) -> None:
    result = run_eval(
        "--policy", LISTINGS, "--out", tmp_path, "--vllm-url", vllm.base_url, "--model-name", "no-such-model",
    )  # fmt: skip
    assert result.returncode == 1
    assert f"the server at {vllm.base_url} does not serve model 'no-such-model'" in result.stderr
    assert SERVED_MODEL in result.stderr
