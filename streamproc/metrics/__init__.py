"""Metrics: one catalog of what is exported, recorder protocols each part reports to, a
no-op recorder and the Prometheus implementation."""

from streamproc.metrics.catalog import (
    APPEAL_OUTCOMES,
    DEFAULT_NAMESPACE,
    QUALITY_METRICS,
    WORKER_METRICS,
    MetricSpec,
    metrics_reference,
)
from streamproc.metrics.prometheus import (
    PrometheusQualityMetrics,
    PrometheusWorkerMetrics,
    create,
    create_quality,
)
from streamproc.metrics.recorder import (
    NOOP,
    DecisionRecorder,
    Figures,
    InferenceRecorder,
    NoopRecorder,
    PipelineRecorder,
    PolicyRecorder,
    QualityRecorder,
    WorkerRecorder,
)

__all__ = [
    "APPEAL_OUTCOMES",
    "DEFAULT_NAMESPACE",
    "NOOP",
    "QUALITY_METRICS",
    "WORKER_METRICS",
    "DecisionRecorder",
    "Figures",
    "InferenceRecorder",
    "MetricSpec",
    "NoopRecorder",
    "PipelineRecorder",
    "PolicyRecorder",
    "PrometheusQualityMetrics",
    "PrometheusWorkerMetrics",
    "QualityRecorder",
    "WorkerRecorder",
    "create",
    "create_quality",
    "metrics_reference",
]
