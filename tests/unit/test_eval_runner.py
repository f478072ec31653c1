"""run_packs with packs compared on the same items: each distinct request is sent once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streamproc.evaluation import load_dataset
from streamproc.evaluation.runner import ItemResult, run_packs
from streamproc.policy import Policy, Thresholds, load_pack
from tests.factories import label_pack
from tests.unit.test_evaluation import DATASET, LISTINGS, FakeModel


def _listings(tmp_path: Path) -> tuple[Policy, Policy]:
    """The listings pack scored with label_logprob, and a candidate with other thresholds."""
    pack = load_pack(label_pack(LISTINGS, tmp_path))
    lowered = {c.id: Thresholds(reject=0.6, review=0.2) for c in pack.categories}
    return pack, pack.with_thresholds(lowered)


def _run(policies: list[Policy], model: FakeModel) -> list[list[ItemResult]]:
    return asyncio.run(run_packs(policies, load_dataset(DATASET), model, concurrency=8))


def test_packs_that_ask_the_same_questions_send_each_once_and_each_counts_its_own(tmp_path: Path) -> None:
    pack, candidate = _listings(tmp_path)
    alone, compared = FakeModel(), FakeModel()
    [single] = _run([pack], alone)
    base, other = _run([pack, candidate], compared)
    assert compared.calls == alone.calls > 0
    for ours, theirs, by_itself in zip(base, other, single, strict=True):
        # Same answers for both packs and as when run alone; each pack's own request count.
        assert ours.scores == theirs.scores == by_itself.scores
        assert ours.requests == theirs.requests == by_itself.requests
        assert ours.error == theirs.error == by_itself.error  # a failed request fails both
    assert any(r.error for r in base) and any(r.requests for r in base)
    assert [r.decision for r in base] != [r.decision for r in other]  # the thresholds still count
