"""The model-server edge: HTTP to an OpenAI-compatible (vLLM) API."""

from streamproc.inference.client import InferenceClient, read_answer
from streamproc.inference.protocol import CompletionResponse

__all__ = ["CompletionResponse", "InferenceClient", "read_answer"]
