"""`streamproc calibrate` against the real vLLM server, then `streamproc eval` with the pack it wrote.

The served model is a weak judge: the test checks that what was fitted is what the worker's
path then does with the server's answers, not that the answers are good.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamproc.dev.devstack import VllmServer
from streamproc.evaluation import EvalReport, InPackCategory, load_dataset
from streamproc.policy import load_pack
from streamproc.policy.model import PlattCalibration
from streamproc.policy.rules import CompiledRules
from tests.factories import label_pack
from tests.integration.conftest import SERVED_MODEL

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SPLIT = ROOT / "datasets" / "moderation-v1" / "calibration.jsonl"
LISTINGS = ROOT / "policies" / "listings.yaml"
CATEGORY = "spam"


def small_split(path: Path) -> Path:
    """7 spam listings (some also another category) and 9 clean ones from the calibration split,
    none decided by a pre-rule (so the model scores all 16)."""
    rules = CompiledRules.compile(load_pack(LISTINGS))
    lines = SPLIT.read_text().splitlines()
    spam: list[str] = []
    clean: list[str] = []
    for item, line in zip(load_dataset(SPLIT), lines, strict=True):
        if item.content_type != "listing" or rules.pre(item.event) is not None:
            continue
        if CATEGORY in item.true_categories and len(spam) < 7:
            spam.append(line)
        elif not item.true_categories and len(clean) < 9:
            clean.append(line)
    assert (len(spam), len(clean)) == (7, 9), "the calibration split lost the items this test needs"
    path.write_text("\n".join(spam + clean) + "\n")
    return path


def streamproc(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamproc", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_calibrate_then_eval_the_written_pack(vllm: VllmServer, tmp_path: Path) -> None:
    data = small_split(tmp_path / "small.jsonl")
    out = tmp_path / "listings-calibrated.yaml"
    server = ["--vllm-url", vllm.base_url, "--model-name", SERVED_MODEL]
    # The shipped pack's texts and thresholds, scored by the generative server's label scorer.
    listings = label_pack(LISTINGS, tmp_path / "label")
    result = streamproc(
        "calibrate", "--policy", listings, "--data", data, "--out", out, "--method", "platt",
        "--category", CATEGORY, *server,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "16 items, 16 scored and fitted on, 0 decided by a pre-rule" in result.stdout
    assert any(
        line.startswith(f"| {CATEGORY} ") and "| 7   | 9   |" in line for line in result.stdout.splitlines()
    )

    pack, shipped = load_pack(out), load_pack(listings)
    fitted = next(c for c in pack.categories if c.id == CATEGORY)
    assert isinstance(fitted.calibration, PlattCalibration)
    for category, before in zip(pack.categories, shipped.categories, strict=True):
        if category.id != CATEGORY:  # only the category asked for changes
            assert category == before
    provenance = pack.calibration_provenance
    assert provenance is not None
    assert (provenance.model, provenance.items, provenance.scored_items) == (SERVED_MODEL, 16, 16)
    assert provenance.dataset_sha256 == hashlib.sha256(data.read_bytes()).hexdigest()
    assert provenance.categories == (CATEGORY,)
    check = streamproc("policy", "check", out)
    assert check.returncode == 0 and f"    {CATEGORY}: review " in check.stdout, check.stdout

    # The written pack through `streamproc eval`, beside the shipped one: the same server
    # scores the same items, now through the calibration, at the fitted thresholds.
    report_dir = tmp_path / "cmp"
    result = streamproc(
        "eval", "--policy", listings, "--compare", out, "--data", data, "--out", report_dir, *server
    )
    assert result.returncode == 0, result.stderr
    report = EvalReport.model_validate_json((report_dir / "report.json").read_bytes())
    base, other = report.packs
    # Each pack's own provenance: the shipped one's (its thresholds) and the fit's.
    assert base.calibration == shipped.calibration_provenance and other.calibration == provenance
    assert "Calibrated on `small.jsonl`" in (report_dir / "report.md").read_text()
    entry = other.categories[CATEGORY]
    assert isinstance(entry, InPackCategory) and entry.review_threshold == fitted.thresholds.review
    scored = [i for i in other.items if i.scores]
    assert len(scored) == 16
    for item in scored:  # the verdict's scores are the calibrated ones, each in [0, 1]
        assert 0.0 <= item.scores[CATEGORY] <= 1.0
    positives = [i.scores[CATEGORY] for i in scored if CATEGORY in i.true_categories]
    caught = sum(s >= fitted.thresholds.review for s in positives)
    # Recall 0.8 of 7 is 6 positives at or above review. vLLM's batched logprobs may move a
    # score at the boundary by a rounding step between the two runs: one item of slack.
    assert caught >= 6 - 1, (positives, fitted.thresholds)
    assert (
        json.loads((report_dir / "report.json").read_text())["packs"][1]["calibration"]["method"] == "platt"
    )
