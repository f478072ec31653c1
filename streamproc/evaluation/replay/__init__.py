"""Replaying past traffic: candidate packs over a time range of the input topics, against the
verdicts the items actually got; resumable, with threshold sweeps over the stored scores."""

from streamproc.evaluation.replay.command import (
    CHANGES_SHOWN,
    ReplayRequest,
    finish_replay,
    load_packs,
    plan_replay,
    retention_gaps,
    run_replay,
    sweep_from_dir,
)
from streamproc.evaluation.replay.labels import load_labels
from streamproc.evaluation.replay.records import BadRecord, ReplayedItem, ReplayPlan
from streamproc.evaluation.replay.report import (
    Change,
    PackReport,
    ReplayReport,
    SweepReport,
    deterministic,
)
from streamproc.evaluation.replay.run import ReplayProgress
from streamproc.evaluation.replay.sweep import SweepAxis, ThresholdSet, parse_axis, threshold_sets

__all__ = [
    "CHANGES_SHOWN",
    "BadRecord",
    "Change",
    "PackReport",
    "ReplayPlan",
    "ReplayProgress",
    "ReplayReport",
    "ReplayRequest",
    "ReplayedItem",
    "SweepAxis",
    "SweepReport",
    "ThresholdSet",
    "deterministic",
    "finish_replay",
    "load_labels",
    "load_packs",
    "parse_axis",
    "plan_replay",
    "retention_gaps",
    "run_replay",
    "sweep_from_dir",
    "threshold_sets",
]
