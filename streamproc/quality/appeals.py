"""Appeals: the appeal policy and the outcome rules that make an appeal verdict. Pure: no I/O.

An appeal re-evaluates the appealed revision's original content under the appeal policy:
the live pack that applies to it with every category's review threshold lowered to at
most ``appeal_review_threshold`` (reject thresholds unchanged), so that only a clear case
is confirmed automatically. The seller's statement is never part of the re-evaluation.

- The re-evaluation decides what the original decided (approve or reject): the decision
  stands; the appeal verdict repeats it (``appeal.stands = True``).
- Anything else (another decision, an original review, an inference error, content that
  can no longer be read): ``review`` with a high-priority review ticket, and
  ``appeal.stands = None``: a human decides. An appeal is never approved from an error.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from streamproc.decision import INFERENCE_ERROR_REASON, review_ticket
from streamproc.policy import Policy, Thresholds
from streamproc.policy.messages import LocalizedText, SellerMessage
from streamproc.schemas import (
    AppealEvent,
    AppealOutcome,
    ContentEvent,
    DecidedBy,
    Latencies,
    ReviewTicket,
    SourceRef,
    Verdict,
)

__all__ = [
    "APPEAL_CONTENT_UNAVAILABLE",
    "APPEAL_REVIEW",
    "APPEAL_REVIEW_MESSAGE",
    "AppealResult",
    "appeal_key",
    "appeal_policy",
    "appeal_verdict",
    "unavailable_verdict",
]

#: The appeal goes to a human because the re-evaluation did not confirm the decision.
APPEAL_REVIEW = "APPEAL_REVIEW"
#: The original content record could not be read back (retention, or undecodable).
APPEAL_CONTENT_UNAVAILABLE = "APPEAL_CONTENT_UNAVAILABLE"
APPEAL_REVIEW_MESSAGE = "Your appeal is waiting for a manual review."
#: In the shipped languages, chosen for the item's locale as pack messages are.
_APPEAL_REVIEW_MESSAGES = LocalizedText(
    APPEAL_REVIEW_MESSAGE,
    "en",
    (
        ("de", "Ihr Einspruch wartet auf eine manuelle Prüfung."),
        ("es", "Tu apelación está pendiente de una revisión manual."),
        ("fr", "Votre contestation est en attente d'une vérification manuelle."),
        ("it", "Il tuo ricorso è in attesa di una revisione manuale."),
        ("pl", "Twoje odwołanie czeka na ręczną weryfikację."),
        ("pt", "Seu recurso está aguardando uma revisão manual."),
    ),
)
#: What became of an appeal (the ``outcome`` label of ``streamproc_appeals_total``).
AppealResult = Literal["stands", "to_human", "content_unavailable", "error"]


def appeal_policy(policy: Policy, review_threshold: float) -> Policy:
    """``policy`` with every review threshold lowered to at most ``review_threshold``.

    Its version differs from the live pack's whenever a threshold changed.
    """
    return policy.with_thresholds(
        {
            c.id: Thresholds(reject=c.thresholds.reject, review=min(c.thresholds.review, review_threshold))
            for c in policy.categories
        }
    )


def appeal_key(original_key: str, appeal_id: str) -> str:
    """The appeal verdict's idempotency key: the appealed verdict's key, then ``:appeal:ID``."""
    return f"{original_key}:appeal:{appeal_id}"


def appeal_verdict(
    original: Verdict,
    appeal: AppealEvent,
    evaluated: Verdict,
    *,
    policy: Policy,
    event: ContentEvent,
    source: SourceRef,
    now: datetime,
) -> tuple[Verdict, AppealResult]:
    """The appeal verdict from the re-evaluation ``evaluated`` (a live verdict of ``policy``).

    Scores, flagged categories, decided_by, policy version, model, usage and inference time
    are the re-evaluation's; end-to-end latency runs from the appeal's ``created_at``.
    """
    _check(original, appeal)
    stands = evaluated.decision == original.decision and original.decision != "review"
    if evaluated.decided_by.kind == "error":
        result: AppealResult = "error"
    else:
        result = "stands" if stands else "to_human"
    if stands:
        decision, reason_code, message, ticket = (
            original.decision,
            evaluated.reason_code,
            SellerMessage(
                evaluated.seller_message, evaluated.seller_message_locale, evaluated.seller_message_fallback
            ),
            None,
        )
    else:
        reason_code = INFERENCE_ERROR_REASON if result == "error" else APPEAL_REVIEW
        # risk 1 (no scores given): an appeal is urgent whatever the model's scores
        ticket = review_ticket(policy, event, {}, evaluated.flagged_categories, now)
        decision, message = "review", _APPEAL_REVIEW_MESSAGES.choose(event.locale)
    verdict = evaluated.model_copy(
        update={
            "decision": decision,
            "reason_code": reason_code,
            "seller_message": message.text,
            "seller_message_locale": message.locale,
            "seller_message_fallback": message.fallback,
            "review": ticket,
            "kind": "appeal",
            "appeal": _outcome(original, appeal, stands=True if stands else None),
            "latency": Latencies(
                inference_seconds=evaluated.latency.inference_seconds,
                processing_seconds=evaluated.latency.processing_seconds,
                end_to_end_seconds=(now - appeal.created_at).total_seconds(),
            ),
            "idempotency_key": appeal_key(original.idempotency_key, appeal.appeal_id),
            "source": source,
            "produced_at": now,
        }
    )
    return Verdict.model_validate(verdict.model_dump()), result


def unavailable_verdict(
    original: Verdict,
    appeal: AppealEvent,
    *,
    model: str,
    review_sla_hours: float,
    source: SourceRef,
    processing_seconds: float,
    now: datetime,
) -> Verdict:
    """The appeal verdict when the original content could not be read: review, stands None.

    Nothing was evaluated, so the scores are empty and the policy version is the original's.
    """
    _check(original, appeal)
    return Verdict(
        mode="live",
        kind="appeal",
        content_type=original.content_type,
        content_id=original.content_id,
        revision=original.revision,
        decision="review",
        scores={},
        flagged_categories=[],
        decided_by=DecidedBy(kind="error", id="content_unavailable"),
        reason_code=APPEAL_CONTENT_UNAVAILABLE,
        seller_message=APPEAL_REVIEW_MESSAGE,  # no content, so no locale to choose for
        seller_message_locale=_APPEAL_REVIEW_MESSAGES.locale,
        policy_version=original.policy_version,
        model=model,
        latency=Latencies(
            processing_seconds=processing_seconds,
            end_to_end_seconds=(now - appeal.created_at).total_seconds(),
        ),
        review=ReviewTicket(
            priority=1.0, risk=1.0, reach=1.0, deadline=now + timedelta(hours=review_sla_hours)
        ),
        appeal=_outcome(original, appeal, stands=None),
        idempotency_key=appeal_key(original.idempotency_key, appeal.appeal_id),
        source=source,
        produced_at=now,
    )


def _outcome(original: Verdict, appeal: AppealEvent, *, stands: bool | None) -> AppealOutcome:
    return AppealOutcome(
        appeal_id=appeal.appeal_id,
        original_decision=original.decision,
        original_idempotency_key=original.idempotency_key,
        stands=stands,
    )


def _check(original: Verdict, appeal: AppealEvent) -> None:
    if original.kind != "automated":
        raise ValueError(f"{original.idempotency_key} is not an automated live verdict")
    ours = (original.content_type, original.content_id, original.revision)
    if ours != (appeal.content_type, appeal.content_id, appeal.revision):
        raise ValueError(f"appeal {appeal.appeal_id} names another revision than {original.idempotency_key}")
