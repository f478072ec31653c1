"""`streamproc eval --cascade-model` against the real vLLM server, which serves one model
under two names: the second model then agrees with the first, so the cascade must cost its
requests and change no decision, and the report's figures must say exactly that."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from streamproc.dev.devstack import VllmServer
from streamproc.evaluation import EvalReport
from tests.integration.conftest import CASCADE_MODEL, SERVED_MODEL

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
#: Two categories, one request per item (label_logprob), and a band no score escapes: every
#: item the model scores cascades.
PACK = """\
name: cascade-check
content_type: listing
preamble: You review marketplace listings for policy violations.
scorer: label_logprob
categories:
  - id: counterfeit
    title: Counterfeit goods
    description: Replicas or fakes of branded products.
    reason_code: COUNTERFEIT
    seller_message: The listing appears to offer counterfeit goods.
    thresholds: {reject: 0.9, review: 0.5}
  - id: spam
    title: Spam
    description: Off-platform contact details or repetitive promotion.
    reason_code: SPAM
    seller_message: The listing looks like spam.
    thresholds: {reject: 0.9, review: 0.5}
cascade:
  band: {low: 0.0, high: 1.0}
"""


def _dataset(path: Path) -> int:
    """A few listings of the shipped labeled set whose categories the pack has."""
    lines = []
    for line in (ROOT / "samples" / "labeled.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if item["content_type"] == "listing" and set(item["true_categories"]) <= {"counterfeit", "spam"}:
            lines.append(line)
    chosen = lines[:3] + lines[-3:]  # clean ones first in the file, violating ones later
    path.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return len(chosen)


def test_eval_cascade_to_the_same_model_costs_its_requests_and_changes_nothing(
    vllm: VllmServer, tmp_path: Path
) -> None:
    served = [m["id"] for m in httpx.get(f"{vllm.base_url}/models", timeout=10).json()["data"]]
    assert {SERVED_MODEL, CASCADE_MODEL} <= set(served)
    (tmp_path / "pack.yaml").write_text(PACK, encoding="utf-8")
    items = _dataset(tmp_path / "data.jsonl")
    out = tmp_path / "eval"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamproc",
            "eval",
            "--policy",
            str(tmp_path / "pack.yaml"),
            "--data",
            str(tmp_path / "data.jsonl"),
            "--out",
            str(out),
            "--vllm-url",
            vllm.base_url,
            "--model-name",
            SERVED_MODEL,
            "--cascade-model",
            CASCADE_MODEL,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [pack] = EvalReport.model_validate_json((out / "report.json").read_bytes()).packs
    cascade = pack.cascade
    assert cascade is not None and cascade.model.name == CASCADE_MODEL
    assert cascade.model.base_url == vllm.base_url  # the main server when --cascade-url is unset
    scored = [i for i in pack.items if i.without_cascade is not None]
    assert cascade.items == items and cascade.cascaded == len(scored) == items - pack.errors
    assert cascade.second_model_requests == cascade.cascaded  # one label request per item
    assert cascade.extra_requests_per_item == pytest.approx(cascade.cascaded / items)
    for item in scored:
        assert (item.requests, item.second_model_requests) == (2, 1)
    # The same weights answer the same prompt: every decision stands.
    assert cascade.decisions_changed == 0 and cascade.second_model_errors == 0
    assert cascade.with_cascade == cascade.without_cascade
    assert all(i.decision == i.without_cascade.decision for i in scored if i.without_cascade)
    assert f"cascade to {CASCADE_MODEL}: {cascade.cascaded} of {items} items" in result.stdout
    report_md = (out / "report.md").read_text(encoding="utf-8")
    assert f"{cascade.cascaded} of {items} items cascaded" in report_md
    print(result.stdout)  # the figures, in the test log
