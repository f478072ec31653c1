from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import pytest

from streamproc.metrics import NOOP
from streamproc.policy import PolicySet, load_policy_set
from streamproc.worker.policy_watch import watch_policies
from tests.factories import POLICIES, shipped_pack_files


def _configmap_revision(folder: Path, name: str, review: str) -> None:
    """Write a ConfigMap volume the way the kubelet does: files in a timestamped folder,
    ``..data`` pointing at it, swapped by renaming a new link over it."""
    revision = folder / f"..{name}"
    revision.mkdir()
    for pack in shipped_pack_files():
        text = pack.read_text()
        if pack.name == "listings.yaml":  # the first category's review threshold
            text, found = re.subn(r"review: [0-9.]+\}", f"review: {review}}}", text, count=1)
            assert found == 1
        (revision / pack.name).write_text(text)
    (folder / "..data_tmp").symlink_to(revision.name)
    os.replace(folder / "..data_tmp", folder / "..data")
    for pack in shipped_pack_files():
        link = folder / pack.name
        if not link.is_symlink():
            link.symlink_to(Path("..data") / pack.name)


async def test_a_configmap_update_is_reloaded(tmp_path: Path) -> None:
    _configmap_revision(tmp_path, "2026_01_01_00_00_00.1", "0.7")
    before = load_policy_set([tmp_path])
    applied: list[PolicySet] = []
    watcher = asyncio.create_task(watch_policies([tmp_path], applied.append, NOOP, debounce_ms=50))
    try:
        # Swapped again every half second until seen: the watcher may not be watching yet at
        # the first swap. The bound only guards against a watcher that never reports.
        for attempt in range(120):
            if applied:
                break
            if attempt % 10 == 0:
                shutil.rmtree(tmp_path / f"..rev{attempt}", ignore_errors=True)
                _configmap_revision(tmp_path, f"rev{attempt}", "0.65")
            await asyncio.sleep(0.05)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert applied, "the ..data swap was not seen"
    assert applied[-1].versions["marketplace-listings"] != before.versions["marketplace-listings"]


class Reloads:
    """Counts reloads by result, as the metrics do."""

    def __init__(self) -> None:
        self.applied = self.rejected = 0

    def policy_reload(self, *, applied: bool) -> None:
        if applied:
            self.applied += 1
        else:
            self.rejected += 1

    def policies_served(self, versions: object, shadows: object) -> None:
        return None


@pytest.mark.parametrize(
    "broken",
    [
        b"name: r\xe9plicas\n",  # not UTF-8
        ("x: " + "[" * 5000 + "]" * 5000 + "\n").encode(),  # nests too deeply for the parser
        (POLICIES / "listings.yaml").read_bytes().replace(b"label: A", b"label: [A]", 1),  # a list label
        b"",  # a loader bug (below)
    ],
    ids=["not-utf8", "deep", "wrong-type", "loader-bug"],
)
async def test_a_broken_pack_is_rejected_and_counted_and_the_next_valid_change_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: bytes
) -> None:
    for pack in shipped_pack_files():
        shutil.copy(pack, tmp_path / pack.name)
    before = load_policy_set([tmp_path])
    if not broken:  # the loader itself fails once, with an error no pack check foresaw
        calls = iter([RuntimeError("bug")])

        def flaky(paths: object) -> PolicySet:
            error = next(calls, None)
            if error is not None:
                raise error
            return load_policy_set([tmp_path])

        monkeypatch.setattr("streamproc.worker.policy_watch.load_policy_set", flaky)
    reloads, applied, said = Reloads(), list[PolicySet](), list[str | None]()
    watcher = asyncio.create_task(
        watch_policies([tmp_path], applied.append, reloads, debounce_ms=50, rejected=said.append)
    )
    try:
        for attempt in range(200):  # rewritten until seen: the watcher may not be watching yet
            if reloads.rejected:
                break
            if attempt % 10 == 0:
                (tmp_path / "broken.yaml").write_bytes(broken or b"# changed\n")
            await asyncio.sleep(0.05)
        assert reloads.rejected and not applied
        # What /readyz then says, until a change applies.
        assert said and said[-1] is not None and said[-1].startswith("policy change rejected")
        (tmp_path / "broken.yaml").unlink()
        listings = tmp_path / "listings.yaml"
        listings.write_text(listings.read_text().replace("review_sla_hours: 24", "review_sla_hours: 12"))
        for _ in range(200):
            if applied:
                break
            await asyncio.sleep(0.05)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert applied, "the watch ended on the broken pack"
    assert said[-1] is None
    assert applied[-1].versions["marketplace-listings"] != before.versions["marketplace-listings"]
