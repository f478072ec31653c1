"""Probe heads: linear classifiers over a backbone's pooled hidden state, trained on the
platform's own labels (``streamproc train``) and applied in the worker.

A heads file is plain JSON beside the pack (never a pickle): the backbone it was trained
on, the feature standardisation, one logistic head per category and one for "any
violation", and the training's provenance. The pack names it with its SHA-256, so the
pack's version changes whenever the heads do, and a file that does not match is refused.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import numpy as np
from pydantic import ConfigDict as _ConfigDict
from pydantic import Field, StringConstraints, TypeAdapter, ValidationError, with_config

from streamproc.errors import ConfigError, InferenceProtocolError, describe_validation_error

__all__ = ["HEADS_FORMAT", "Backbone", "LinearHead", "ProbeHeads", "describe_heads", "load_heads"]

HEADS_FORMAT: Final = "streamproc.probe-heads/1"
_FILE: Final = _ConfigDict(extra="forbid")

Floats = tuple[float, ...]


@with_config(_FILE)
@dataclass(frozen=True)
class Backbone:
    """What the heads read: the served model, how deep it was cut and how it pools."""

    #: The source model the backbone was cut from (its directory name or hub id).
    source: Annotated[str, StringConstraints(min_length=1)]
    #: Decoder layers kept, of the source's ``source_layers`` (None: not recorded).
    layers: Annotated[int, Field(ge=1)] | None
    source_layers: Annotated[int, Field(ge=1)] | None
    pooling: Literal["mean"]
    #: Embedding width the server returns; an answer of another width is refused.
    width: Annotated[int, Field(ge=1)]


@with_config(_FILE)
@dataclass(frozen=True)
class LinearHead:
    """``sigmoid(weights · z + bias)`` over the standardised embedding ``z``."""

    weights: Floats
    bias: float


@with_config(_FILE)
@dataclass(frozen=True)
class ProbeHeads:
    format: Literal["streamproc.probe-heads/1"]
    backbone: Backbone
    #: Per-feature mean and scale of the training embeddings (z = (x - mean) / scale).
    mean: Floats
    scale: Floats
    #: P(the item violates any category); the category heads say which.
    flagged: LinearHead
    categories: dict[str, LinearHead]
    #: How the heads were trained: data hash, backbone, command, cross-validated figures.
    provenance: dict[str, Any]

    def __post_init__(self) -> None:
        width = self.backbone.width
        heads = [self.flagged, *self.categories.values()]
        sizes = {len(self.mean), len(self.scale), *(len(h.weights) for h in heads)}
        if sizes != {width}:
            raise ValueError(
                f"every vector must have the backbone's width {width}, found lengths {sorted(sizes)}"
            )
        if not all(s > 0 and math.isfinite(s) for s in self.scale):
            raise ValueError("scale must be positive and finite")

    @cached_property
    def _matrix(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Rows: the flagged head, then each category's; standardisation folded in."""
        weights = np.array([self.flagged.weights, *(h.weights for h in self.categories.values())]) / np.array(
            self.scale
        )
        biases = np.array([self.flagged.bias, *(h.bias for h in self.categories.values())])
        return weights, biases - weights @ np.array(self.mean)

    def scores(self, embedding: Sequence[float], categories: Sequence[str]) -> dict[str, float]:
        """Each category's score: P(flagged), shared by how strongly each category head fires.

        The most likely category scores P(flagged) itself and the others in proportion to
        their heads, so a violation whose category is ambiguous still reaches the threshold
        of the likeliest one.

        Raises:
            InferenceProtocolError: the embedding's width is not the backbone's (another
                model is being served); the item then goes to review.
        """
        if len(embedding) != self.backbone.width:
            raise InferenceProtocolError(
                f"the embedding server returned {len(embedding)} features; the pack's heads were trained "
                f"on {self.backbone.width} ({self.backbone.source}, {self.backbone.layers} layers): "
                "serve the heads' backbone (STREAMPROC_EMBEDDING__*)"
            )
        weights, biases = self._matrix
        probabilities = 1.0 / (1.0 + np.exp(-(weights @ np.asarray(embedding, dtype=float) + biases)))
        flagged, by_category = (
            float(probabilities[0]),
            dict(zip(self.categories, probabilities[1:], strict=True)),
        )
        top = max(by_category[c] for c in categories)
        return {c: flagged * float(by_category[c]) / top if top > 0 else 0.0 for c in categories}


_HEADS: Final = TypeAdapter(ProbeHeads)


def describe_heads(heads: ProbeHeads) -> list[str]:
    """What ``streamproc policy check`` shows of a pack's heads: backbone, training, figures."""
    backbone, provenance = heads.backbone, heads.provenance
    depth = (
        f"layers 1-{backbone.layers} of {backbone.source_layers}" if backbone.layers else "depth not recorded"
    )
    lines = [
        f"heads: backbone {backbone.source} ({depth}, {backbone.pooling} pooling, width {backbone.width}), "
        f"served as {provenance.get('embedding_model', '?')}; trained {provenance.get('created_at', '?')} on "
        f"{provenance.get('dataset', '?')} (sha256 {str(provenance.get('dataset_sha256', '?'))[:12]}, "
        f"{provenance.get('items', '?')} items)"
    ]
    for name, figures in provenance.get("cross_validated", {}).items():
        lines.append(
            f"  head {name}: {figures.get('positives')} positives, C {figures.get('c')}, "
            f"cross-validated AUC {figures.get('auc')}"
        )
    return lines


def load_heads(path: Path, sha256: str, categories: Sequence[str]) -> ProbeHeads:
    """The heads in ``path``, checked against the pack: checksum and categories.

    Raises:
        ConfigError: one line saying what does not fit and how to fix it.
    """
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the pack's heads: {exc.strerror}") from exc
    actual = hashlib.sha256(content).hexdigest()
    if actual != sha256:
        raise ConfigError(
            f"{path}: SHA-256 {actual} is not the {sha256} the pack names; the heads changed since the "
            "pack was written: retrain (`streamproc train`) or restore the file"
        )
    try:
        heads = _HEADS.validate_json(content)
    except ValidationError as exc:
        raise ConfigError(
            describe_validation_error(exc, whole="(heads)", where=lambda loc: str(path))
        ) from exc
    missing = [c for c in categories if c not in heads.categories]
    if missing:
        raise ConfigError(f"{path}: no heads for categories {missing}; retrain them with `streamproc train`")
    return heads
