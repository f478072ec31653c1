#!/usr/bin/env python3
"""Choose the scorer and prompt by measurement: every variant calibrated on one split, tested on the other.

    python scripts/compare_scorers.py --vllm-url URL --model-name NAME \
        --embedding-url URL --embedding-model-name NAME [--only NAME ...]
    python scripts/compare_scorers.py --vllm-python PY --model-dir DIR --embedding-model-dir DIR
                                      # starts the two vLLM servers once for all variants

Each variant is the shipped packs with one change (scorer, prompt text, examples, category
order). For each: `streamproc calibrate` fits thresholds on the calibration split (for
`embedding_probe`, `streamproc train` fits heads and thresholds there), then `streamproc
eval` runs the packs over the test split, which neither ever sees. Prints one table (violation P/R/F1 over both packs, automation rate, requests and
prompt tokens per item) and, with --write-docs, puts it in docs/scorers.md.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import yaml

from streamproc.cli.model_server import ServerOptions, model_servers, server_options
from streamproc.config import Settings

ROOT = Path(__file__).resolve().parents[1]
PACKS = ("listings", "videos")
DOC = ROOT / "docs" / "scorers.md"
BEGIN, END = "<!-- results: make compare-scorers -->", "<!-- end results -->"

Pack = dict[str, Any]


def _scorer(name: str) -> Callable[[Pack], None]:
    def change(pack: Pack) -> None:
        pack["scorer"] = name

    return change


#: The review-recall target `make train` fits the shipped heads' thresholds with.
PROBE_REVIEW_RECALL = "0.85"


def _no_examples(pack: Pack) -> None:
    for category in pack["categories"]:
        category.pop("examples", None)


def _reversed_order(pack: Pack) -> None:
    pack["categories"].reverse()


def _label_no_examples(pack: Pack) -> None:
    pack["scorer"] = "label_logprob"
    _no_examples(pack)


def _label_reversed(pack: Pack) -> None:
    pack["scorer"] = "label_logprob"
    _reversed_order(pack)


def _plain_channel(pack: Pack) -> None:
    pack["scorer"] = "channel"
    pack.pop("channel_neutral", None)
    for category in pack["categories"]:
        category.pop("channel_prompt", None)


#: name → (what changes from the shipped packs, the change)
VARIANTS: dict[str, tuple[str, Callable[[Pack], None]]] = {
    "embedding_probe": (
        "linear heads on the backbone's mean-pooled hidden state, trained on the calibration split "
        f"(thresholds out of fold, review recall {PROBE_REVIEW_RECALL})",
        _scorer("label_logprob"),  # any scorer without heads: `streamproc train` replaces it
    ),
    "channel": ("channel scorer, the packs' channel texts (examples inside)", _scorer("channel")),
    "channel-plain": ("channel scorer, category title and description as the text", _plain_channel),
    "label_logprob": ("one letter per item, policy then item", _scorer("label_logprob")),
    "label_logprob-no-examples": (
        "label_logprob without the examples in the policy prefix",
        _label_no_examples,
    ),
    "label_logprob-reversed": (
        "label_logprob with the categories in reverse order",
        _label_reversed,
    ),
    "yes_no": ("one Yes/No question per category, item before the question", _scorer("yes_no")),
    "llama_guard": ("Llama Guard prompt and safe/unsafe answer", _scorer("llama_guard")),
    "json": ("a JSON object of scores, schema-constrained generation", _scorer("json")),
}


#: A measurement, not a service: few requests at a time and a long timeout, so that a slow
#: (CPU) server scores every item instead of timing some out.
PATIENT = {
    "STREAMPROC_INFERENCE__MAX_INFLIGHT": "16",
    "STREAMPROC_INFERENCE__MIN_INFLIGHT": "4",
    "STREAMPROC_INFERENCE__TIMEOUT_SECONDS": "300",
}


def _run(args: list[str]) -> None:
    click.echo("$ streamproc " + " ".join(args), err=True)
    command = [str(Path(sys.executable).parent / "streamproc"), *args]
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, **PATIENT})


def _variant_packs(change: Callable[[Pack], None], into: Path) -> list[Path]:
    into.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in PACKS:
        pack = copy.deepcopy(yaml.safe_load((ROOT / "policies" / f"{name}.yaml").read_text()))
        for category in pack["categories"]:  # start from the uncalibrated text
            category.pop("calibration", None)
        pack.pop("calibration_provenance", None)
        pack.pop("heads", None)  # the shipped heads: each variant fits its own
        change(pack)
        path = into / f"{name}.yaml"
        path.write_text(yaml.safe_dump(pack, sort_keys=False, allow_unicode=True))
        paths.append(path)
    return paths


def _measure(name: str, server: list[str], data: tuple[Path, Path], out: Path) -> dict[str, Any]:
    change = VARIANTS[name][1]
    packs = _variant_packs(change, out / name / "packs")
    calibrated = out / name / "calibrated"
    fit = ["train", "--review-recall", PROBE_REVIEW_RECALL] if name == "embedding_probe" else ["calibrate"]
    _run([*fit, *_policies(packs), "--data", str(data[0]), "--out", str(calibrated), *server])
    report = out / name / "eval"
    _run(
        [
            "eval",
            *_policies(sorted(calibrated.glob("*.yaml"))),
            "--data",
            str(data[1]),
            "--out",
            str(report),
            *server,
        ]
    )
    summary = json.loads((report / "summary.json").read_text())
    return _row(name, summary, report)


def _policies(paths: list[Path]) -> list[str]:
    return [arg for path in paths for arg in ("--policy", str(path))]


def _row(name: str, summary: dict[str, Any], report: Path) -> dict[str, Any]:
    packs = summary["packs"]
    tp, fp, fn, tn = (sum(p["violation"]["system"][k] for p in packs) for k in ("tp", "fp", "fn", "tn"))
    items = tp + fp + fn + tn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    cost = [p["violation"]["system"]["cost"] for p in packs]
    automated, errors = 0.0, 0
    for pack in packs:
        pack_report = json.loads((report / pack["report"] / "report.json").read_text())
        decisions = pack_report["packs"][0]["decisions"]
        automated += decisions["automation_rate"] * pack["violation"]["items"]
        errors += pack_report["packs"][0]["errors"]
    return {
        "variant": name,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "automation": automated / items if items else 0.0,
        "requests": sum(c["requests"] for c in cost) / items if items else 0.0,
        "prompt_tokens": sum(c["prompt_tokens"] for c in cost) / items if items else 0.0,
        "items": items,
        "violating": tp + fn,
        "errors": errors,
    }


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | what changes | violation P | R | F1 | automation | requests / item | prompt tokens / item "
        "| inference errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: -r["f1"]):
        lines.append(
            f"| `{r['variant']}` | {VARIANTS[r['variant']][0]} | {r['precision']:.2f} | {r['recall']:.2f} | "
            f"{r['f1']:.2f} | {r['automation']:.0%} | {r['requests']:.1f} | {r['prompt_tokens']:.0f} | "
            f"{r['errors']} |"
        )
    # What sending every item to review would score: the floor a scorer must clear.
    violating, items = rows[0]["violating"], rows[0]["items"]
    precision = violating / items if items else 0.0
    f1 = 2 * precision / (precision + 1) if violating else 0.0
    lines.append(f"| *review everything* | no model | {precision:.2f} | 1.00 | {f1:.2f} | 0% | 0 | 0 | 0 |")
    return "\n".join(lines)


@click.command()
@server_options
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    default=ROOT / "datasets/moderation-v1/calibration.jsonl",
)
@click.option("--test", type=click.Path(path_type=Path), default=ROOT / "datasets/moderation-v1/test.jsonl")
@click.option("--only", multiple=True, type=click.Choice(list(VARIANTS)), help="Run these variants only.")
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / ".compare", show_default=True)
@click.option("--write-docs", is_flag=True, help=f"Put the table in {DOC.relative_to(ROOT)}.")
def main(
    servers: ServerOptions,
    calibration: Path,
    test: Path,
    only: tuple[str, ...],
    out: Path,
    write_docs: bool,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    names = only or tuple(VARIANTS)
    roles = (any(n != "embedding_probe" for n in names), "embedding_probe" in names)  # servers to start
    with model_servers(servers, Settings(), out, packs=[], roles=roles) as running:
        embedding = running.embedding or running.generative
        server = ["--vllm-url", running.generative.base_url, "--model-name", running.generative.model,
                  "--embedding-url", embedding.base_url, "--embedding-model-name", embedding.model]  # fmt: skip
        for name in names:
            rows.append(_measure(name, server, (calibration, test), out))
    table = _table(rows)
    model_name = running.generative.model
    note = (
        f"Model `{model_name}` (embedding_probe: `{embedding.model}`); calibrated on `{calibration.name}`, "
        f"tested on `{test.name}` "
        f"({rows[0]['items']} items); {datetime.now(UTC):%Y-%m-%d}; {platform.machine()}, "
        f"{platform.python_version()}."
    )
    click.echo(f"{note}\n\n{table}")
    if write_docs:
        text = DOC.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        DOC.write_text(f"{text[:start]}\n{note}\n\n{table}\n{text[end:]}")
        click.echo(f"wrote {DOC}", err=True)


if __name__ == "__main__":
    main()
