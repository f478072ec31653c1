"""Hot reload: watch the policy pack files and swap in a new PolicySet when they change.

A pack that fails validation (or, through a bug, cannot be loaded at all) is rejected
(logged, counted) and the previous set keeps serving; the watch goes on. Folders are
watched rather than files, so editors that save by renaming work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from watchfiles import awatch

from streamproc.errors import ConfigError
from streamproc.metrics import PolicyRecorder
from streamproc.policy import PolicySet, load_policy_set

__all__ = ["publish_policy_info", "watch_policies"]

log = logging.getLogger(__name__)


def publish_policy_info(metrics: PolicyRecorder, policies: PolicySet) -> None:
    """Record exactly the live versions being served; shadow packs are logged and their
    series start at zero."""
    shadows = policies.shadow_policies
    metrics.policies_served(policies.versions, [p.name for p in shadows])
    for version in policies.versions.values():
        log.info("serving policy %s", version)
    for policy in shadows:
        log.info(
            "shadowing with policy %s on %.0f%% of its items", policy.version, policy.shadow_sample * 100
        )


async def watch_policies(
    paths: Sequence[Path],
    apply: Callable[[PolicySet], None],
    metrics: PolicyRecorder,
    *,
    debounce_ms: int = 300,
    allow_shadows: bool = True,
    rejected: Callable[[str | None], None] = lambda _: None,
) -> None:
    """Run until cancelled: reload on every change under ``paths``.

    With ``allow_shadows`` false (the worker started without shadow packs, so it never
    checked that the shadow topic exists) a change that adds shadow packs is rejected.
    ``rejected`` hears why a change was rejected, and None once a change is applied.
    """
    folders = sorted({(p if p.is_dir() else p.parent).resolve() for p in paths})
    async for changes in awatch(*folders, debounce=debounce_ms, recursive=False):
        if not any(_is_pack_change(Path(changed)) for _, changed in changes):
            continue
        try:
            policies = load_policy_set(paths)
            if policies.shadow_policies and not allow_shadows:
                raise ConfigError(  # noqa: TRY301 - rejected like any invalid change
                    f"shadow packs {list(policies.shadow_versions)} were added while the worker runs; "
                    "restart it to load them (it then checks that the shadow topic exists)"
                )
        except ConfigError as exc:
            metrics.policy_reload(applied=False)
            log.error("policy change rejected, previous packs keep serving: %s", exc)  # noqa: TRY400
            rejected(f"policy change rejected, previous packs keep serving: {exc}")
            continue
        except Exception as exc:  # a loader bug must not end the watch: later changes still apply
            metrics.policy_reload(applied=False)
            log.exception("policy change rejected (unexpected error), previous packs keep serving")
            rejected(f"policy change rejected (unexpected error {exc!r}), previous packs keep serving")
            continue
        apply(policies)
        rejected(None)
        metrics.policy_reload(applied=True)
        publish_policy_info(metrics, policies)


def _is_pack_change(path: Path) -> bool:
    """A pack file, or a Kubernetes ConfigMap volume's swap of its ``..data`` link (the files
    themselves are links that never change)."""
    return path.suffix in {".yaml", ".yml"} or path.name.startswith("..data")
