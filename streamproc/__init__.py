"""streamproc: streaming content-moderation workers (Kafka in, vLLM-scored verdicts out)."""

from importlib.metadata import version

from streamproc.config import Settings, load_settings
from streamproc.decision import Outcome, build_verdict, decide, decide_on_error
from streamproc.errors import ConfigError, DecodeError, InferenceError, StreamprocError
from streamproc.schemas import DeadLetter, ListingEvent, Verdict, VideoEvent

__version__ = version("streamproc")

__all__ = [
    "ConfigError",
    "DeadLetter",
    "DecodeError",
    "InferenceError",
    "ListingEvent",
    "Outcome",
    "Settings",
    "StreamprocError",
    "Verdict",
    "VideoEvent",
    "__version__",
    "build_verdict",
    "decide",
    "decide_on_error",
    "load_settings",
]
