"""``moderation.verdicts.v1`` and ``moderation.review.v1``: what was decided and why."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, Self

from pydantic import AwareDatetime, Field, model_validator

from streamproc.schemas.common import ContentId, ContentType, OutboundModel
from streamproc.schemas.explanation import Explanation

__all__ = [
    "AppealOutcome",
    "DecidedBy",
    "Decision",
    "HumanDecision",
    "LabelSource",
    "Latencies",
    "ReviewTicket",
    "SourceRef",
    "TokenUsage",
    "Verdict",
    "VerdictKind",
    "VerdictMode",
]

Decision = Literal["approve", "reject", "review"]
VerdictMode = Literal["live", "shadow"]
VerdictKind = Literal["automated", "shadow", "final", "appeal"]
LabelSource = Literal["qa_audit", "review", "appeal"]
Score = Annotated[float, Field(ge=0.0, le=1.0)]

#: What each kind of verdict is: (mode, decided by a human, carries an appeal outcome).
_KIND_FACTS: Final[dict[VerdictKind, tuple[VerdictMode, bool, bool]]] = {
    "automated": ("live", False, False),
    "shadow": ("shadow", False, False),
    "final": ("live", True, False),
    "appeal": ("live", False, True),
}


class DecidedBy(OutboundModel):
    """What settled the decision."""

    kind: Literal["category", "rule", "error", "none", "human"] = Field(
        description="category: a category's threshold; rule: a policy rule, before or after "
        "the model; error: inference failed, or a rule failed on the item (id rule:RULE_ID), so "
        "never approve; none: no category reached a threshold; human: a reviewer's decision on "
        "an earlier verdict."
    )
    id: str | None = Field(default=None, description="The category id, rule id, error kind or labeler id.")


class Latencies(OutboundModel):
    """Seconds spent, measured by the worker."""

    inference_seconds: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Model server time for this item, retries included."
    )
    processing_seconds: Annotated[float, Field(ge=0)] = Field(
        description="From the worker receiving the event to the verdict being built."
    )
    end_to_end_seconds: float = Field(description="From the event's created_at to the verdict being built.")


class TokenUsage(OutboundModel):
    """Token counts the model server reported for this item."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int | None = Field(
        default=None, description="Prompt tokens served from the prefix cache, if reported."
    )


class SourceRef(OutboundModel):
    """Where the event was read from."""

    topic: str
    partition: int
    offset: int


class ReviewTicket(OutboundModel):
    """Where a ``review`` verdict goes in the human review queue."""

    priority: Annotated[float, Field(ge=0)] = Field(description="risk times reach; higher first.")
    risk: Score = Field(
        description="The highest category score; 1 when there are none (inference failed, or a "
        "pre-model rule decided)."
    )
    reach: Annotated[float, Field(ge=0)] = Field(description="The event's audience, at least 1.")
    deadline: AwareDatetime = Field(
        description="Decide by then: the shortest review SLA of the flagged categories, else the "
        "policy pack's."
    )


class HumanDecision(OutboundModel):
    """On a final verdict: the human decision that settled an earlier automated one."""

    source: LabelSource = Field(description="review (review queue outcome) or appeal (appeal outcome).")
    labeler_id: str = Field(description="Who decided (also decided_by.id).")
    label_id: str = Field(description="The label event that carried the decision.")
    original_decision: Decision = Field(description="The automated live verdict's decision.")
    original_idempotency_key: str = Field(description="The automated live verdict's idempotency key.")
    overturned: bool = Field(
        description="True when the human decision differs from the automation's: for an original "
        "approve or reject, from that decision; for an original review, from its lean (reject when "
        "it flagged a category, else approve)."
    )


class AppealOutcome(OutboundModel):
    """On an appeal verdict: the appeal and what its re-evaluation found."""

    appeal_id: str = Field(description="The appeal event this verdict answers.")
    original_decision: Decision = Field(description="The appealed live verdict's decision.")
    original_idempotency_key: str = Field(description="The appealed live verdict's idempotency key.")
    stands: bool | None = Field(
        description="True: the re-evaluation under the appeal policy confirms the original decision "
        "(the verdict repeats it). None: it does not, or the content could not be re-evaluated; the "
        "verdict is review and a human decides. Never False: only a human overturns."
    )


class Verdict(OutboundModel):
    """The moderation decision for one revision of one item, keyed by ``content_id``.

    Consumers deduplicate on ``idempotency_key``: delivery is at least once, and a
    redelivered event yields a verdict with the same key. They route on ``kind``.
    """

    schema_version: Literal[1] = 1
    mode: VerdictMode = Field(
        default="live",
        description="live verdicts enforce; shadow verdicts (a candidate policy) go only to the "
        "shadow topic and never to enforcement.",
    )
    kind: VerdictKind = Field(
        description="automated: the worker's decision, to enforce; shadow: a candidate policy's "
        "(mode shadow), never enforced; final: a human's decision settling an automated verdict "
        "(see human); appeal: the re-evaluation of an appealed verdict (see appeal). Verdicts "
        "written before this field existed are read with the kind their other fields imply."
    )
    content_type: ContentType
    content_id: ContentId
    revision: int
    decision: Decision
    scores: dict[str, Score] = Field(description="Score in [0, 1] per policy category.")
    flagged_categories: list[str] = Field(
        default_factory=list,
        description="Categories held violated: score at or above their review threshold, or "
        "the deciding rule's category. Empty for approvals and inference errors.",
    )
    decided_by: DecidedBy
    clipped_fields: list[str] = Field(
        default_factory=list,
        description="Fields of the item the model did not read in full: text past the policy's "
        "windows, or images withheld for their host. Empty when it read everything (and on "
        "verdicts a rule decided before the model).",
    )
    reason_code: str = Field(description="Stable machine-readable reason, e.g. COUNTERFEIT.")
    seller_message: str = Field(description="Text that may be shown to the seller or creator.")
    seller_message_locale: str | None = Field(
        default=None,
        description="The locale seller_message is written in: the item's locale, or a shorter form "
        "of it (de for an item in de-AT), where the message has a translation there, else the "
        "default text's (en for the shipped packs and built-in messages). None when there is no "
        "message, and on verdicts written before this field existed.",
    )
    seller_message_fallback: bool = Field(
        default=False,
        description="True when the message has no text in the item's locale or language, so "
        "seller_message is the default text, in another language than the item's.",
    )
    policy_version: str
    model: str = Field(
        description="Served model whose scores decided, or whose call failed: the cascade's second "
        "model when the item's scores fell in its pack's cascade band."
    )
    latency: Latencies
    usage: TokenUsage | None = None
    review: ReviewTicket | None = Field(default=None, description="Set on automated review verdicts.")
    human: HumanDecision | None = Field(default=None, description="Set on final verdicts after a human.")
    appeal: AppealOutcome | None = Field(
        default=None, description="Set on appeal verdicts (the re-evaluation of an appealed verdict)."
    )
    explanation: Explanation | None = Field(
        default=None,
        description="What decided it: scores against thresholds with margins, the deciding rule's "
        "match, the deciding window. Set on the worker's verdicts and kept on an appeal's "
        "re-evaluation; None on final verdicts, on appeal verdicts whose content could not be "
        "read, and on verdicts written before this field existed.",
    )
    idempotency_key: str = Field(
        description="content_type:content_id:revision:policy_version, with :human:LABEL_ID on "
        "final verdicts and :appeal:APPEAL_ID on appeal verdicts (after the appealed verdict's "
        "key); stable across redeliveries."
    )
    source: SourceRef
    produced_at: AwareDatetime

    @model_validator(mode="before")
    @classmethod
    def _kind_of_old_verdicts(cls, data: Any) -> Any:
        # Verdicts published before ``kind`` existed: the kind their fields imply, as
        # consumers used to infer it.
        if not isinstance(data, dict) or "kind" in data:
            return data
        decided_by, appeal = data.get("decided_by"), data.get("appeal")
        human = (
            decided_by.get("kind") if isinstance(decided_by, dict) else getattr(decided_by, "kind", None)
        ) == "human"
        kind: VerdictKind
        if appeal is not None:
            kind = "appeal"
        elif human:
            kind = "final"
        else:
            kind = "shadow" if data.get("mode") == "shadow" else "automated"
        return {**data, "kind": kind}

    @model_validator(mode="after")
    def _kind_agrees(self) -> Self:
        # Consumers route on kind alone: it must never say something the fields deny.
        if (self.mode, self.decided_by.kind == "human", self.appeal is not None) != _KIND_FACTS[self.kind]:
            mode, human, appeal = _KIND_FACTS[self.kind]
            raise ValueError(
                f"kind {self.kind} needs mode {mode}, {'a' if human else 'no'} human decided_by and "
                f"{'an' if appeal else 'no'} appeal; this verdict has mode {self.mode}, decided_by.kind "
                f"{self.decided_by.kind} and {'an' if self.appeal is not None else 'no'} appeal"
            )
        return self
