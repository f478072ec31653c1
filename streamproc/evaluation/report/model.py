"""The evaluation report as typed, immutable data: ``report.json`` field for field.

``EvalReport.model_dump_json()`` writes the file and ``EvalReport.model_validate_json()``
reads it back into the same object. Field names are the JSON keys, so renaming a field
changes the file that people's tooling reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from streamproc.policy.model import CalibrationProvenance
from streamproc.schemas import ContentType, Decision

__all__ = [
    "CascadeFigures",
    "CascadeReport",
    "CategoryDelta",
    "CategoryEntry",
    "CategoryFigures",
    "Comparison",
    "ConfusionFigures",
    "ConfusionMatrix",
    "DatasetRef",
    "DecidedByRef",
    "DecisionBrief",
    "DecisionCounts",
    "DecisionDifference",
    "ErrorItem",
    "EvalReport",
    "InPackCategory",
    "ItemReport",
    "ModelContribution",
    "ModelCost",
    "OutOfPackCategory",
    "PrecisionRecallCurve",
    "PrecisionRecallF1",
    "RunReport",
    "ServedModel",
    "ThresholdPoint",
    "ViolationDelta",
    "ViolationFigures",
    "ViolationReport",
]


class _Frozen(BaseModel):
    # extra="forbid": reading a report.json of another shape fails instead of dropping keys.
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetRef(_Frozen):
    """The labeled dataset the packs ran over."""

    path: str
    #: Lines in the dataset, of every content type.
    items: int


class ServedModel(_Frozen):
    """The model server that scored the items."""

    name: str
    base_url: str


class PrecisionRecallF1(_Frozen):
    """The three figures of one binary decision; 0 where undefined (scikit-learn's zero_division=0)."""

    precision: float
    recall: float
    f1: float


class ThresholdPoint(_Frozen):
    """Figures and counts when a category is flagged at model score ≥ ``threshold``."""

    threshold: float
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    tn: int


class PrecisionRecallCurve(_Frozen):
    """As ``sklearn.metrics.precision_recall_curve``: one point per distinct score, then (1, 0)."""

    precision: tuple[float, ...]
    recall: tuple[float, ...]
    #: Ascending; one fewer than the points.
    thresholds: tuple[float, ...]


class CategoryFigures(_Frozen):
    """One category at the pack's decisions: flagged by the verdict, or not."""

    in_pack: bool
    precision: float
    recall: float
    f1: float
    #: Evaluated items that truly violate the category (tp + fn).
    support: int
    tp: int
    fp: int
    fn: int
    tn: int


class OutOfPackCategory(CategoryFigures):
    """A category only the other pack of a comparison defines: counts only, nothing to sweep."""

    in_pack: Literal[False] = False


class InPackCategory(CategoryFigures):
    """A category of the pack, with its thresholds and the model's scores swept and plotted."""

    in_pack: Literal[True] = True
    review_threshold: float
    reject_threshold: float
    #: The model's score alone at the review threshold (rules and pre-rules left out).
    model_at_review_threshold: PrecisionRecallF1
    #: None when no threshold of the sweep finds anything.
    best_f1_threshold: float | None
    best_f1: float
    #: None when no model-scored item truly violates the category.
    average_precision: float | None
    sweep: tuple[ThresholdPoint, ...]
    #: None when the model scored no item.
    pr_curve: PrecisionRecallCurve | None


#: A category entry; ``in_pack`` in the JSON says which of the two it is.
CategoryEntry = Annotated[InPackCategory | OutOfPackCategory, Field(discriminator="in_pack")]


class DecisionCounts(_Frozen):
    """How the evaluated items were decided."""

    approve: int
    review: int
    reject: int
    #: Share decided without a person (approve + reject); 0 when nothing was evaluated.
    automation_rate: float
    #: Approved although a person judged them violating.
    approved_violating: int
    #: Rejected although a person judged them clean.
    rejected_clean: int


class ConfusionMatrix(_Frozen):
    """Rows: true categories (and ``none``); columns: predicted class; ``counts[row][column]``."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    counts: Mapping[str, Mapping[str, int]]


class ModelCost(_Frozen):
    """Model requests and tokens over the evaluated items, from the answers' usage."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    #: Per evaluated item (items a pre-rule decided cost nothing); 0 when nothing was evaluated.
    requests_per_item: float
    prompt_tokens_per_item: float
    completion_tokens_per_item: float


class ConfusionFigures(_Frozen):
    """Precision, recall and F1 of one binary decision, with its counts."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    tn: int


class ViolationFigures(ConfusionFigures):
    """Violates any category (truth) against flagged, i.e. decision review or reject (predicted)."""

    cost: ModelCost


class ModelContribution(_Frozen):
    """Items the model's categories flagged and no rule did: what the model adds to the rules."""

    flagged: int
    #: Violating items only the model caught (the system's tp minus the rules').
    violating: int
    #: Clean items only the model held back (the system's fp minus the rules').
    clean: int


class ViolationReport(_Frozen):
    """The pack's binary figures and two baselines computed from the same run and items.

    ``rules_only``: a rule's decision (pre or post) where one decided, approve elsewhere;
    ``all_approve``: nothing flagged. ``system`` = ``rules_only`` + ``model_added``.
    """

    #: Evaluated items, and those a person judged to violate some category.
    items: int
    violating: int
    system: ViolationFigures
    rules_only: ViolationFigures
    all_approve: ViolationFigures
    model_added: ModelContribution
    flagged_by_pre_rules: int
    flagged_by_post_rules: int
    #: Of those, items the model's thresholds had approved (a post-rule escalated them).
    post_rule_flags_over_model_approval: int


class DecidedByRef(_Frozen):
    """What decided an item, as in a verdict's ``decided_by``."""

    kind: str
    id: str | None


class ErrorItem(_Frozen):
    """An item the model could not score; left out of every number."""

    id: str
    line: int
    error: str


class ItemReport(_Frozen):
    """One item as a pack decided it: everything the figures are computed from."""

    id: str
    line: int
    true_categories: tuple[str, ...]
    #: The model's score per category; empty when a pre-rule decided or inference failed.
    scores: Mapping[str, float]
    decision: Decision
    decided_by: DecidedByRef
    reason_code: str
    flagged_categories: tuple[str, ...]
    #: The inference error kind, when the model could not score the item.
    error: str | None
    #: The deciding rule's stage (pre or post), when a rule decided.
    rule_stage: Literal["pre", "post"] | None
    #: What the model's thresholds decided before post-rules; None when it did not score.
    model_decision: Decision | None
    #: Model requests answered for the item and their token usage.
    requests: int
    prompt_tokens: int
    completion_tokens: int
    #: The cascade: the second model's requests (counted in ``requests`` too), and what the
    #: first model alone decided; absent when the item did not cascade.
    second_model_requests: int = Field(default=0, exclude_if=lambda value: value == 0)
    without_cascade: DecisionBrief | None = Field(default=None, exclude_if=lambda value: value is None)


class CascadeFigures(_Frozen):
    """One side of the cascade's effect: the items' decisions with it, or the first model's alone."""

    violation: PrecisionRecallF1
    #: Share of the items decided without a person (approve + reject).
    automation_rate: float
    review: int


class CascadeReport(_Frozen):
    """The cascade's cost and effect, from one run: the decisions with the second model, and
    the first model's alone (scored alongside). Over the items the first model scored or a
    rule decided; a second-model failure counts as what it is in production: a review."""

    model: ServedModel
    band_low: float
    band_high: float
    items: int
    #: Items with a score in the band, sent to the second model.
    cascaded: int
    second_model_requests: int
    #: Second-model requests per item of ``items``: the cascade's extra load.
    extra_requests_per_item: float
    second_model_errors: int
    #: Cascaded items whose decision the second model changed.
    decisions_changed: int
    without_cascade: CascadeFigures
    with_cascade: CascadeFigures


class RunReport(_Frozen):
    """One pack's run over the items of its content type."""

    name: str
    version: str
    #: How tables and plots name the pack: its name, or its version when two share a name.
    label: str
    content_type: ContentType
    #: How the pack asks the model (its ``scorer``): what its cost per item depends on.
    scorer: str
    items_total: int
    evaluated: int
    skipped_other_content_type: int
    #: Items inference failed on (listed in ``error_items``).
    errors: int
    error_items: tuple[ErrorItem, ...]
    scored_by_model: int
    #: Every category of the report, in the report's order.
    categories: Mapping[str, CategoryEntry]
    decisions: DecisionCounts
    #: Violating items caught at all, against the rules-only and all-approve baselines.
    violation: ViolationReport
    confusion_matrix: ConfusionMatrix
    items: tuple[ItemReport, ...]
    #: Where the pack's thresholds came from (``streamproc calibrate``); absent when not calibrated.
    calibration: CalibrationProvenance | None = Field(default=None, exclude_if=lambda value: value is None)
    #: The cascade's cost and effect (``eval --cascade-model``); absent without one.
    cascade: CascadeReport | None = Field(default=None, exclude_if=lambda value: value is None)


class CategoryDelta(_Frozen):
    """``other - base`` for one category."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int


class ViolationDelta(_Frozen):
    """``other - base`` of the violation figures and of their cost per item."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    requests_per_item: float
    prompt_tokens_per_item: float


class DecisionBrief(_Frozen):
    """How one pack decided an item, for the list of items decided differently."""

    decision: Decision
    flagged_categories: tuple[str, ...]
    decided_by: DecidedByRef


class DecisionDifference(_Frozen):
    """An item whose decision or flagged categories differ between the two packs."""

    id: str
    line: int
    true_categories: tuple[str, ...]
    base: DecisionBrief
    other: DecisionBrief


class Comparison(_Frozen):
    """A pack (``base``) against another over the same items; deltas are ``other - base``."""

    base: str
    other: str
    category_deltas: Mapping[str, CategoryDelta]
    automation_rate_delta: float
    violation_delta: ViolationDelta
    decision_differences: tuple[DecisionDifference, ...]


class EvalReport(_Frozen):
    """Everything ``streamproc eval`` measured: one run per pack, a comparison when there are two."""

    dataset: DatasetRef
    model: ServedModel
    generated_at: datetime
    #: The packs' categories: the first pack's order, then any the other adds.
    categories: tuple[str, ...]
    packs: tuple[RunReport, ...]
    #: Absent from the JSON (not null) when a pack ran alone.
    comparison: Comparison | None = Field(default=None, exclude_if=lambda value: value is None)

    @field_serializer("generated_at")
    def _iso(self, value: datetime) -> str:
        # ``isoformat`` (``+00:00``), as report.json has always written it; pydantic would write ``Z``.
        return value.isoformat()
