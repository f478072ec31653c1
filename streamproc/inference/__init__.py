"""The model-server edge: HTTP to an OpenAI-compatible (vLLM) API."""

from streamproc.inference.client import InferenceClient
from streamproc.inference.responses import read_answer

__all__ = ["InferenceClient", "read_answer"]
