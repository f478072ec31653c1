"""Hot reload: watch the policy pack files and swap in a new PolicySet when they change.

A pack that fails validation is rejected (logged, counted) and the previous set keeps
serving. Folders are watched rather than files, so editors that save by renaming work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from watchfiles import awatch

from streamproc.errors import ConfigError
from streamproc.metrics import Metrics
from streamproc.policy import PolicySet, load_policy_set

__all__ = ["publish_policy_info", "watch_policies"]

log = logging.getLogger(__name__)


def publish_policy_info(metrics: Metrics, policies: PolicySet) -> None:
    """``policy_info{name,version} 1`` for exactly the versions being served."""
    metrics.policy_info.clear()
    for name, version in policies.versions.items():
        metrics.policy_info.labels(name=name, version=version).set(1)
        log.info("serving policy %s", version)


async def watch_policies(
    paths: Sequence[Path], apply: Callable[[PolicySet], None], metrics: Metrics, *, debounce_ms: int = 300
) -> None:
    """Run until cancelled: reload on every change under ``paths``."""
    folders = sorted({(p if p.is_dir() else p.parent).resolve() for p in paths})
    async for changes in awatch(*folders, debounce=debounce_ms, recursive=False):
        if not any(Path(changed).suffix in {".yaml", ".yml"} for _, changed in changes):
            continue
        try:
            policies = load_policy_set(paths)
        except ConfigError as exc:
            metrics.policy_reloads.labels(result="rejected").inc()
            log.error("policy change rejected, previous packs keep serving: %s", exc)  # noqa: TRY400
            continue
        apply(policies)
        metrics.policy_reloads.labels(result="applied").inc()
        publish_policy_info(metrics, policies)
