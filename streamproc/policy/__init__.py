"""What "violating" means: policies as frozen data and the pure functions over them."""

from streamproc.policy.default import DEFAULT_POLICIES, configured_policies, default_policy
from streamproc.policy.model import Category, Policy, Thresholds
from streamproc.policy.prompt import ChatMessage, build_messages, render_item, system_prompt
from streamproc.policy.scoring import score_labels

__all__ = [
    "DEFAULT_POLICIES",
    "Category",
    "ChatMessage",
    "Policy",
    "Thresholds",
    "build_messages",
    "configured_policies",
    "default_policy",
    "render_item",
    "score_labels",
    "system_prompt",
]
