"""The model-server edge: HTTP to an OpenAI-compatible (vLLM) API."""

from streamproc.inference.client import InferenceClient, LabelCompletion
from streamproc.inference.protocol import ChatCompletionResponse, label_request

__all__ = ["ChatCompletionResponse", "InferenceClient", "LabelCompletion", "label_request"]
