"""`streamproc demo`, the README's first command, end to end: its own broker and worker on
the session's model servers, the shipped packs and samples; every well-formed sample gets a
verdict (the model deciding some), every malformed one a dead letter."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from streamproc.dev.devstack import free_port
from tests.integration.conftest import EMBEDDING_MODEL, ROOT, SERVED_MODEL, ModelServers


def _samples(name: str) -> list[dict[str, object]]:
    lines = (ROOT / "samples" / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_demo_prints_a_result_for_every_sample(model_servers: ModelServers, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "streamproc", "demo", "--until-done", "--run-dir", str(tmp_path),
        "--metrics-port", str(free_port()),
        "--vllm-url", model_servers.generative.base_url, "--model-name", SERVED_MODEL,
        "--embedding-url", model_servers.embedding.base_url, "--embedding-model-name", EMBEDDING_MODEL,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [str(item.get("listing_id") or item.get("video_id")) for item in _samples("listings.jsonl")]
    ids += [str(item["video_id"]) for item in _samples("videos.jsonl")]
    lines = done.stdout.splitlines()
    decided = {
        line.split()[1]: line.split()[0] for line in lines if re.match(r"^(approve|review|reject) ", line)
    }
    assert sorted(decided) == sorted(ids)
    # Every verdict says what decided it, on the line after it.
    whys = [
        lines[n + 1].strip() for n, line in enumerate(lines) if re.match(r"^(approve|review|reject) ", line)
    ]
    assert len(whys) == len(ids) and all(w.startswith("why: ") and len(w) > len("why: ") for w in whys), whys
    malformed = (ROOT / "samples" / "malformed.jsonl").read_text(encoding="utf-8").splitlines()
    assert sum(line.startswith("DLQ ") for line in lines) == len([m for m in malformed if m.strip()])
    summary = next(line for line in lines if "samples answered" in line)
    model = re.search(r"decided by .*model (\d+)", summary)
    assert model is not None and int(model.group(1)) > 0, summary  # not only rules
    assert "stopped; logs in" in done.stdout
