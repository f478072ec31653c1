"""What "violating" means: policies as frozen data and the pure functions over them."""

from streamproc.policy.default import DEFAULT_POLICIES, default_policy
from streamproc.policy.model import Category, MediaBudget, Policy, Rule, ScorerName, Thresholds
from streamproc.policy.packs import PolicySet, load_pack, load_policy_set
from streamproc.policy.prompt import ItemContent, item_content, render_item, user_content
from streamproc.policy.scorers import SCORERS, ModelAnswer, ModelRequest, Scorer, TokenChoice

__all__ = [
    "DEFAULT_POLICIES",
    "SCORERS",
    "Category",
    "ItemContent",
    "MediaBudget",
    "ModelAnswer",
    "ModelRequest",
    "Policy",
    "PolicySet",
    "Rule",
    "Scorer",
    "ScorerName",
    "Thresholds",
    "TokenChoice",
    "default_policy",
    "item_content",
    "load_pack",
    "load_policy_set",
    "render_item",
    "user_content",
]
