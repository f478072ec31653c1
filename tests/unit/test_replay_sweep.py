"""Threshold sweeps over a replay's stored scores equal replays at those thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.errors import ConfigError
from streamproc.evaluation.replay import (
    SweepReport,
    load_labels,
    load_packs,
    parse_axis,
    sweep_from_dir,
    threshold_sets,
)
from streamproc.policy import Thresholds
from tests.unit.replay_scenario import LIVE, LIVE_YAML, MarkedModel, replay_all, scenario, write_labels


async def test_a_sweep_equals_separate_replays_at_its_thresholds(tmp_path: Path) -> None:
    topics = await scenario()
    # Reviews from 0.4 change L-2 (L-6 is reviewed for spam either way: by its post-rule live,
    # by its score here); rejects from 0.55 change L-5.
    axes = [parse_axis("spam.review=0.4,0.5"), parse_axis("spam.reject=0.55,0.8")]
    sets = threshold_sets(axes, [LIVE])
    labels = load_labels(write_labels(tmp_path / "labels.jsonl"), [LIVE])
    model = MarkedModel()
    base = await replay_all(topics, tmp_path / "base", model, policy=LIVE, sweeps=sets, labels=labels)
    calls = model.calls
    sweep = SweepReport.model_validate_json((tmp_path / "base" / "sweep.json").read_bytes())
    assert [s.label for s in sweep.sets] == [
        "spam.review=0.4 spam.reject=0.55",
        "spam.review=0.4 spam.reject=0.8",
        "spam.review=0.5 spam.reject=0.55",
        "spam.review=0.5 spam.reject=0.8",
    ]
    for swept in sweep.sets:
        policy = LIVE.with_thresholds({"spam": Thresholds(**swept.thresholds["spam"])})
        folder = tmp_path / str(len(swept.label)) / swept.label
        separate = await replay_all(topics, folder, policy=policy, labels=labels)
        assert swept.packs == separate.packs, swept.label  # the labeled figures included
    assert model.calls == calls  # the sweep asked the model nothing
    # At the live pack's own thresholds, the sweep is the replay itself.
    assert sweep.sets[-1].packs == base.packs
    assert sweep.sets[-1].packs[0].changed == 0
    assert [s.packs[0].changed for s in sweep.sets[:3]] == [2, 1, 1]
    # Reviews from 0.4 catch L-2 (labeled spam); rejects from 0.55 flag nothing new.
    f1s = []
    for swept in sweep.sets:
        labeled = swept.packs[0].labeled
        assert labeled is not None
        f1s.append((labeled.live.f1, labeled.candidate.f1))
    assert f1s == [(3 / 4, 8 / 9), (3 / 4, 8 / 9), (3 / 4, 3 / 4), (3 / 4, 3 / 4)]
    assert "# spam.review=0.4 spam.reject=0.55" in (tmp_path / "base" / "sweep.md").read_text()


async def test_a_sweep_from_a_finished_replay_folder_needs_no_broker(tmp_path: Path) -> None:
    topics = await scenario()
    pack = tmp_path / "pack.yaml"
    pack.write_text(LIVE_YAML)
    [policy] = load_packs([pack])  # as the command reads it
    assert policy.version == LIVE.version
    out = tmp_path / "replay"
    await replay_all(topics, out, policy=policy, pack_file=pack)
    report = sweep_from_dir(out, [parse_axis("spam.review=0.4")])
    assert report.sets[0].packs[0].changed == 1
    assert report.sets[0].packs[0].labeled is None
    labeled = sweep_from_dir(
        out, [parse_axis("spam.review=0.4")], labels_file=write_labels(tmp_path / "l.jsonl")
    )
    [swept] = labeled.sets[0].packs
    assert swept.labeled is not None and swept.labeled.candidate.f1 == 8 / 9
    assert "| violation F1 live | violation F1 candidate |" in (out / "sweep.md").read_text()
    pack.write_text(LIVE_YAML.replace("review: 0.5, reject: 0.8", "review: 0.45, reject: 0.8"))
    with pytest.raises(ConfigError, match=r"pack.yaml changed since the replay"):
        sweep_from_dir(out, [parse_axis("spam.review=0.4")])


def test_a_sweep_needs_categories_the_packs_have_and_possible_thresholds() -> None:
    with pytest.raises(ConfigError, match=r"--sweep: no pack has a category 'nope'"):
        threshold_sets([parse_axis("nope.reject=0.5")], [LIVE])
    with pytest.raises(
        ConfigError, match=r"--sweep spam.reject=0.3: replay-test spam: review \(0.5\) must not"
    ):
        threshold_sets([parse_axis("spam.reject=0.3")], [LIVE])
    with pytest.raises(ConfigError, match="given twice"):
        threshold_sets([parse_axis("spam.reject=0.9"), parse_axis("spam.reject=0.95")], [LIVE])
    with pytest.raises(ConfigError, match="at most 100"):
        values = ",".join(f"0.{i:02d}" for i in range(11, 22))
        threshold_sets([parse_axis(f"spam.review={values}"), parse_axis(f"adult.review={values}")], [LIVE])


@pytest.mark.parametrize(
    "spec", ["spam=0.5", "spam.block=0.5", "spam.reject=high", "spam.reject=1.5", "spam.reject="]
)
def test_a_bad_sweep_spec_says_what_is_expected(spec: str) -> None:
    with pytest.raises(ValueError, match=r"CATEGORY\.reject|between 0 and 1"):
        parse_axis(spec)
