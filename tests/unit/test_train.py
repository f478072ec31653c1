"""`streamproc train`: heads fitted with cross-validation inside the split, thresholds fitted
on out-of-fold scores, heads and pack written with provenance and loaded back; calibrate
refuses the split the heads were trained on."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from streamproc.cli import cli
from streamproc.config import InferenceSettings
from streamproc.errors import ConfigError
from streamproc.evaluation.calibrate import Targets
from streamproc.evaluation.calibration_command import CalibrationRequest, plan_calibration
from streamproc.evaluation.train import fit_heads
from streamproc.evaluation.train_command import plan_training, run_training
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.policy import load_pack
from streamproc.policy.heads import Backbone
from tests.factories import listing_dict
from tests.unit.test_probe_heads import write_probe_pack

BACKBONE = Backbone(source="fake", layers=2, source_layers=4, pooling="mean", width=1)
WORDS = {"scam": "guaranteed returns wire the deposit", "weapons": "untraceable pistol kit"}


def write_dataset(path: Path, per_class: int = 14, seed: int = 3) -> Path:
    rng = random.Random(seed)
    lines = []
    for number in range(3 * per_class):
        label = (None, "scam", "weapons")[number % 3]
        text = (
            f"item {number} {rng.choice(['red', 'blue', 'old', 'new'])} {WORDS[label] if label else 'bike'}"
        )
        event = listing_dict(listing_id=f"L-{number}", title=f"Title {number}", description=text)
        labels = [label] if label else []
        lines.append(json.dumps({"content_type": "listing", "event": event, "true_categories": labels}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class FakeEmbedder:
    """Vectors whose first features carry the labels' words, the rest the text's hash."""

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        self.requests.append(request)
        text = request.body["input"][0]
        noise = np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)).normal(
            0, 0.3, 6
        )
        signal = [float("pistol" in text), float("deposit" in text)]
        vector = [signal[0] + signal[1] + noise[0], signal[1] + noise[1], signal[0] + noise[2], *noise[3:]]
        return ModelAnswer(text="", embeddings=(tuple(float(v) for v in vector),))


def test_fit_heads_chooses_regularisation_inside_the_data() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    labels = [["a"] if v > 0.3 else [] for v in x[:, 0]]
    heads, figures = fit_heads(x, labels, ["a"], BACKBONE, {"dataset_sha256": "x"})
    assert figures["(any violation)"].cv_auc > 0.9 and figures["a"].positives == sum(map(bool, labels))
    assert len(heads.flagged.weights) == 5 and heads.provenance["cross_validated"]["a"]["items"] == 60
    with pytest.raises(ValueError, match="at least 2 positives"):
        fit_heads(x, [["a"] if i == 0 else [] for i in range(60)], ["a"], BACKBONE, {})


def test_train_writes_heads_and_a_pack_that_loads(tmp_path: Path) -> None:
    pack = write_probe_pack(tmp_path)
    data = write_dataset(tmp_path / "train.jsonl")
    plan = plan_training([pack], data, tmp_path / "out", Targets(0.8, 0.95))
    model = FakeEmbedder()
    settings = InferenceSettings(model="fake-backbone")
    [trained] = run_training(plan, settings, backbone=BACKBONE, command="streamproc train …", model=model)
    assert len(model.requests) == 42  # one per distinct item text
    assert trained.out_of_fold.f1 > 0.9  # the words are in the vectors
    written = load_pack(tmp_path / "out" / "probe-test.yaml")
    assert written.scorer == "embedding_probe" and written.probe is not None
    assert written.heads is not None and written.heads.file == "probe-test.heads.json"
    heads_file = json.loads((tmp_path / "out" / "probe-test.heads.json").read_text())
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    assert heads_file["provenance"]["dataset_sha256"] == digest
    assert (
        heads_file["backbone"]["width"] == 6
        and heads_file["provenance"]["embedding_model"] == "fake-backbone"
    )
    provenance = written.calibration_provenance
    assert (
        provenance is not None
        and provenance.scorer == "embedding_probe"
        and provenance.dataset_sha256 == digest
    )
    # one review threshold for every category, from "any violation" out of fold
    assert len({c.thresholds.review for c in written.categories}) == 1
    with pytest.raises(ConfigError, match="its heads were trained on"):
        plan_calibration(
            [written_path := tmp_path / "out" / "probe-test.yaml"], data, tmp_path / "cal", _calibrate()
        )
    assert written_path.is_file()


def _calibrate() -> CalibrationRequest:
    return CalibrationRequest("none", Targets(0.8, 0.95))


def test_train_refuses_a_pack_file_as_out(tmp_path: Path) -> None:
    pack = write_probe_pack(tmp_path)
    data = write_dataset(tmp_path / "train.jsonl")
    result = CliRunner().invoke(
        cli, ["train", "--policy", str(pack), "--data", str(data), "--out", str(tmp_path / "new.yaml")]
    )
    assert result.exit_code != 0 and "must be a folder" in result.output
    assert "Traceback" not in result.output
