"""Thresholds and rules to an outcome: which decision, decided by what, with which reason.

Pure: no Kafka, HTTP or clock reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from streamproc.policy import Category, Policy
from streamproc.policy.messages import DEFAULT_MESSAGE_LOCALE, LocalizedText
from streamproc.schemas import DecidedBy, Decision

__all__ = [
    "INFERENCE_ERROR_MESSAGE",
    "INFERENCE_ERROR_MESSAGES",
    "INFERENCE_ERROR_REASON",
    "NO_VIOLATION_REASON",
    "Outcome",
    "decide",
    "decide_by_rule",
    "decide_on_error",
    "decide_on_rule_error",
]

NO_VIOLATION_REASON = "NO_VIOLATION"
INFERENCE_ERROR_REASON = "INFERENCE_ERROR"
INFERENCE_ERROR_MESSAGE = "Your content is waiting for a manual review."
#: The fail-closed message in the shipped languages. Fixed in code, as the message is, so that
#: the error path needs nothing from a pack; other locales read it in English.
INFERENCE_ERROR_MESSAGES = LocalizedText(
    INFERENCE_ERROR_MESSAGE,
    "en",
    (
        ("de", "Ihr Inhalt wartet auf eine manuelle Prüfung."),
        ("es", "Tu contenido está pendiente de una revisión manual."),
        ("fr", "Votre contenu est en attente d'une vérification manuelle."),
        ("it", "Il tuo contenuto è in attesa di una revisione manuale."),
        ("pl", "Twoja treść czeka na ręczną weryfikację."),
        ("pt", "Seu conteúdo está aguardando uma revisão manual."),
    ),
)
RULE_ERROR_REASON = "RULE_ERROR"

_SEVERITY: Mapping[Decision, int] = {"approve": 0, "review": 1, "reject": 2}


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    decided_by: DecidedBy
    reason_code: str
    seller_message: str
    #: The category a rule named, if the outcome is a rule's.
    rule_category: str | None = None
    #: The locale ``seller_message`` is written in, and its translations (locale, text).
    message_locale: str = DEFAULT_MESSAGE_LOCALE
    seller_messages: tuple[tuple[str, str], ...] = ()

    @property
    def localized(self) -> LocalizedText:
        """The message with its translations, to choose from for an item's locale."""
        return LocalizedText(self.seller_message, self.message_locale, self.seller_messages)


def _category_decision(category: Category, score: float) -> Decision:
    if score >= category.thresholds.reject:
        return "reject"
    if score >= category.thresholds.review:
        return "review"
    return "approve"


def decide(policy: Policy, scores: Mapping[str, float]) -> Outcome:
    """The most severe per-category decision wins; among equals, the highest score.

    Ties on score go to the category listed first in the policy.
    """
    best: tuple[int, float, int] | None = None
    winner: Category | None = None
    for index, category in enumerate(policy.categories):
        score = scores.get(category.id, 0.0)
        decision = _category_decision(category, score)
        if decision == "approve":
            continue
        rank = (_SEVERITY[decision], score, -index)
        if best is None or rank > best:
            best, winner = rank, category
    if winner is None or best is None:
        return Outcome("approve", DecidedBy(kind="none"), NO_VIOLATION_REASON, "")
    decision = "reject" if best[0] == _SEVERITY["reject"] else "review"
    return Outcome(
        decision,
        DecidedBy(kind="category", id=winner.id),
        winner.reason_code,
        winner.seller_message,
        message_locale=policy.message_locale,
        seller_messages=winner.seller_messages,
    )


def decide_by_rule(
    rule_id: str,
    decision: Decision,
    reason_code: str,
    seller_message: str,
    policy: Policy,
    category: str | None,
) -> Outcome:
    """A rule's decision; its message (with its translations) defaults to its category's."""
    translations: tuple[tuple[str, str], ...] = ()
    if seller_message:
        rule = next((r for r in policy.rules if r.id == rule_id), None)
        # the rule's translations are of its own text, not of one a caller put in its place
        if rule is not None and rule.seller_message == seller_message:
            translations = rule.seller_messages
    elif category is not None:
        found = next((c for c in policy.categories if c.id == category), None)
        if found is not None:
            seller_message, translations = found.seller_message, found.seller_messages
    return Outcome(
        decision,
        DecidedBy(kind="rule", id=rule_id),
        reason_code,
        seller_message,
        category,
        message_locale=policy.message_locale,
        seller_messages=translations,
    )


def decide_on_error(error_kind: str) -> Outcome:
    """Fail closed: an item the model could not score goes to human review, never approve."""
    return _fail_closed(DecidedBy(kind="error", id=error_kind), INFERENCE_ERROR_REASON)


def decide_on_rule_error(rule_id: str) -> Outcome:
    """Fail closed: a rule that raised on the item might have matched it, so the item goes to
    human review, never approve; ``decided_by`` names the rule."""
    return _fail_closed(DecidedBy(kind="error", id=f"rule:{rule_id}"), RULE_ERROR_REASON)


def _fail_closed(decided_by: DecidedBy, reason_code: str) -> Outcome:
    message = INFERENCE_ERROR_MESSAGES
    return Outcome(
        "review",
        decided_by,
        reason_code,
        message.text,
        message_locale=message.locale,
        seller_messages=message.translations,
    )
