"""Settings: one typed tree, read once at start-up.

Every field can be set by environment variable (``STREAMPROC_`` prefix, ``__`` between
levels, e.g. ``STREAMPROC_INFERENCE__BASE_URL``), by a YAML file named in
``STREAMPROC_CONFIG_FILE`` (or ``--config``), or by keyword in code and tests.
Precedence: keyword > environment > file > default.
"""

from streamproc.config.cascade import CascadeSettings
from streamproc.config.checks import check_bootstrap_servers
from streamproc.config.embedding import EmbeddingSettings
from streamproc.config.loading import load_settings
from streamproc.config.model import (
    CONFIG_FILE_ENV,
    ENV_PREFIX,
    AuditSettings,
    InferenceSettings,
    KafkaSettings,
    LogLevel,
    MetricsSettings,
    PolicySettings,
    QualitySettings,
    Settings,
    TopicSettings,
    WorkerSettings,
)
from streamproc.config.reference import settings_reference

__all__ = [
    "CONFIG_FILE_ENV",
    "ENV_PREFIX",
    "AuditSettings",
    "CascadeSettings",
    "EmbeddingSettings",
    "InferenceSettings",
    "KafkaSettings",
    "LogLevel",
    "MetricsSettings",
    "PolicySettings",
    "QualitySettings",
    "Settings",
    "TopicSettings",
    "WorkerSettings",
    "check_bootstrap_servers",
    "load_settings",
    "settings_reference",
]
