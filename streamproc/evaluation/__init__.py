"""Offline evaluation: a policy pack over a labeled dataset, through the real model server."""

from streamproc.evaluation.command import EvalPlan, EvalReport, ModelServer, plan_evaluation, run_evaluation
from streamproc.evaluation.dataset import DatasetError, LabeledItem, check_categories, load_dataset
from streamproc.evaluation.report import ReportContext, build_report, render_markdown, write_report
from streamproc.evaluation.runner import ItemResult, PackRun, ServerUnreachable, check_server, run_packs

__all__ = [
    "DatasetError",
    "EvalPlan",
    "EvalReport",
    "ItemResult",
    "LabeledItem",
    "ModelServer",
    "PackRun",
    "ReportContext",
    "ServerUnreachable",
    "build_report",
    "check_categories",
    "check_server",
    "load_dataset",
    "plan_evaluation",
    "render_markdown",
    "run_evaluation",
    "run_packs",
    "write_report",
]
