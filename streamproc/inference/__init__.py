"""The model-server edge: HTTP to an OpenAI-compatible (vLLM) API."""

from streamproc.inference.client import InferenceClient
from streamproc.inference.responses import read_answer
from streamproc.inference.router import ModelRouter, open_router

__all__ = ["InferenceClient", "ModelRouter", "open_router", "read_answer"]
