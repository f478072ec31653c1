"""The pure decision core: thresholds, the rules cascade around the model, verdicts, audit
and shadow selection. No Kafka; the model server is reached through a ``ModelClient``."""

from streamproc.decision.evaluate import (
    Evaluation,
    ModelClient,
    SecondModel,
    decide_scored,
    decide_verdict,
    evaluate,
    evaluate_item,
)
from streamproc.decision.explain import WindowScores, explain
from streamproc.decision.sampling import audit_sample, drawn, sampled_shadows, shadow_key
from streamproc.decision.thresholds import (
    INFERENCE_ERROR_MESSAGE,
    INFERENCE_ERROR_MESSAGES,
    INFERENCE_ERROR_REASON,
    NO_VIOLATION_REASON,
    Outcome,
    decide,
    decide_by_rule,
    decide_on_error,
)
from streamproc.decision.verdict import (
    build_verdict,
    flagged_categories,
    idempotency_key,
    review_ticket,
)

__all__ = [
    "INFERENCE_ERROR_MESSAGE",
    "INFERENCE_ERROR_MESSAGES",
    "INFERENCE_ERROR_REASON",
    "NO_VIOLATION_REASON",
    "Evaluation",
    "ModelClient",
    "Outcome",
    "SecondModel",
    "WindowScores",
    "audit_sample",
    "build_verdict",
    "decide",
    "decide_by_rule",
    "decide_on_error",
    "decide_scored",
    "decide_verdict",
    "drawn",
    "evaluate",
    "evaluate_item",
    "explain",
    "flagged_categories",
    "idempotency_key",
    "review_ticket",
    "sampled_shadows",
    "shadow_key",
]
