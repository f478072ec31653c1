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
    """``policy_info{name,version} 1`` for exactly the live versions being served; shadow
    packs are logged and their metrics start at zero."""
    metrics.policy_info.clear()
    for name, version in policies.versions.items():
        metrics.policy_info.labels(name=name, version=version).set(1)
        log.info("serving policy %s", version)
    for policy in policies.shadow_policies:
        for decision in ("approve", "reject", "review"):
            metrics.shadow_verdicts.labels(policy=policy.name, decision=decision)
        for agreed in ("true", "false"):
            metrics.shadow_agreement.labels(policy=policy.name, agreed=agreed)
        metrics.shadow_failures.labels(policy=policy.name)
        log.info(
            "shadowing with policy %s on %.0f%% of its items", policy.version, policy.shadow_sample * 100
        )


async def watch_policies(
    paths: Sequence[Path],
    apply: Callable[[PolicySet], None],
    metrics: Metrics,
    *,
    debounce_ms: int = 300,
    allow_shadows: bool = True,
) -> None:
    """Run until cancelled: reload on every change under ``paths``.

    With ``allow_shadows`` false (the worker started without shadow packs, so it never
    checked that the shadow topic exists) a change that adds shadow packs is rejected.
    """
    folders = sorted({(p if p.is_dir() else p.parent).resolve() for p in paths})
    async for changes in awatch(*folders, debounce=debounce_ms, recursive=False):
        if not any(Path(changed).suffix in {".yaml", ".yml"} for _, changed in changes):
            continue
        try:
            policies = load_policy_set(paths)
            if policies.shadow_policies and not allow_shadows:
                raise ConfigError(  # noqa: TRY301 - rejected like any invalid change
                    f"shadow packs {list(policies.shadow_versions)} were added while the worker runs; "
                    "restart it to load them (it then checks that the shadow topic exists)"
                )
        except ConfigError as exc:
            metrics.policy_reloads.labels(result="rejected").inc()
            log.error("policy change rejected, previous packs keep serving: %s", exc)  # noqa: TRY400
            continue
        apply(policies)
        metrics.policy_reloads.labels(result="applied").inc()
        publish_policy_info(metrics, policies)
