"""What "violating" means: policies as frozen data and the pure functions over them."""

from streamproc.policy.model import Category, MediaBudget, Policy, Rule, ScorerName, Thresholds
from streamproc.policy.packs import PolicySet, load_pack, load_policy_set
from streamproc.policy.prompt import (
    ItemContent,
    ItemWindows,
    item_content,
    item_windows,
    render_item,
    user_content,
)
from streamproc.policy.rule_fields import rule_fields_reference
from streamproc.policy.scorers import SCORERS, Scorer, model_roles, uses_embeddings

__all__ = [
    "SCORERS",
    "Category",
    "ItemContent",
    "ItemWindows",
    "MediaBudget",
    "Policy",
    "PolicySet",
    "Rule",
    "Scorer",
    "ScorerName",
    "Thresholds",
    "item_content",
    "item_windows",
    "load_pack",
    "load_policy_set",
    "model_roles",
    "render_item",
    "rule_fields_reference",
    "user_content",
    "uses_embeddings",
]
