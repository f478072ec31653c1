"""The evaluation report: typed data built once from the runs, written as JSON, markdown and PNGs."""

from streamproc.evaluation.report.build import ReportContext, build_report
from streamproc.evaluation.report.markdown import render_markdown
from streamproc.evaluation.report.model import (
    CategoryDelta,
    CategoryEntry,
    CategoryFigures,
    Comparison,
    ConfusionMatrix,
    DatasetRef,
    DecidedByRef,
    DecisionBrief,
    DecisionCounts,
    DecisionDifference,
    ErrorItem,
    EvalReport,
    InPackCategory,
    ItemReport,
    OutOfPackCategory,
    PrecisionRecallCurve,
    PrecisionRecallF1,
    RunReport,
    ServedModel,
    ThresholdPoint,
)
from streamproc.evaluation.report.plots import plot_curves
from streamproc.evaluation.report.write import write_report

__all__ = [
    "CategoryDelta",
    "CategoryEntry",
    "CategoryFigures",
    "Comparison",
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
    "OutOfPackCategory",
    "PrecisionRecallCurve",
    "PrecisionRecallF1",
    "ReportContext",
    "RunReport",
    "ServedModel",
    "ThresholdPoint",
    "build_report",
    "plot_curves",
    "render_markdown",
    "write_report",
]
