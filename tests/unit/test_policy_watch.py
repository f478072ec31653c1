from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

from streamproc.metrics import NOOP
from streamproc.policy import PolicySet, load_policy_set
from streamproc.worker.policy_watch import watch_policies
from tests.factories import shipped_pack_files


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
