"""Writing a calibrated pack: the input pack file with only thresholds, calibration blocks and
the provenance changed (or only the cascade's calibration and its provenance), its comments,
order, quoting and indentation kept (ruamel.yaml's round-trip mode; the ``calibrate`` extra)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from streamproc.errors import ConfigError
from streamproc.evaluation.calibrate import CategoryFit
from streamproc.policy.model import (
    Calibration,
    CalibrationProvenance,
    ContextualCalibration,
    IsotonicCalibration,
    PlattCalibration,
)

__all__ = ["calibrated_pack_text", "cascade_pack_text"]


def calibrated_pack_text(
    source: Path,
    fits: Sequence[CategoryFit],
    provenance: CalibrationProvenance,
    *,
    top: Mapping[str, Any] | None = None,
) -> tuple[str, int]:
    """The text of ``source`` with each fitted category's thresholds and calibration set (the
    block removed when the fit has none) and ``calibration_provenance`` set, and how many
    other lines the rewrite changes (0 unless the file has a layout ruamel.yaml normalises).

    Raises:
        ConfigError: the file cannot be read as a pack's mapping.
    """
    data, layout, changed = _load(source)
    by_id = {c.get("id"): c for c in data["categories"] if hasattr(c, "get")}
    for fit in fits:
        if not fit.fitted:
            continue
        node = by_id[fit.category]
        node["thresholds"]["reject"] = fit.new.reject
        node["thresholds"]["review"] = fit.new.review
        if fit.calibration is None:
            node.pop("calibration", None)
        else:
            node["calibration"] = _calibration_node(fit.calibration)
    for key, value in (top or {}).items():  # e.g. the scorer and heads `streamproc train` sets
        node = _flow(value) if isinstance(value, Mapping) else value
        if key in data or "scorer" not in data:
            data[key] = node
        else:  # a new key goes beside the scorer it belongs to
            data.insert(list(data).index("scorer") + 1, key, node)
    data["calibration_provenance"] = _provenance_node(provenance)
    return _dump(data, layout), changed


def cascade_pack_text(
    source: Path, fits: Sequence[CategoryFit], provenance: CalibrationProvenance
) -> tuple[str, int]:
    """The text of ``source`` with its cascade block's ``calibration`` set to the fitted
    categories' calibrations (others kept) and its ``calibration_provenance`` set; and how
    many other lines the rewrite changes, as ``calibrated_pack_text``.

    Raises:
        ConfigError: the file cannot be read as a pack's mapping, or has no cascade block.
    """
    data, layout, changed = _load(source)
    cascade = data.get("cascade")
    if not hasattr(cascade, "get"):
        raise ConfigError(f"{source}: no cascade block to calibrate")
    from ruamel.yaml.comments import CommentedMap  # noqa: PLC0415 - the calibrate extra

    calibrations = cascade.get("calibration") or CommentedMap()
    for fit in fits:
        if fit.fitted and fit.calibration is not None:
            calibrations[fit.category] = _calibration_node(fit.calibration)
    cascade["calibration"] = calibrations
    cascade["calibration_provenance"] = _provenance_node(provenance)
    return _dump(data, layout), changed


def _load(source: Path) -> tuple[Any, tuple[int, int, int], int]:
    """The pack's round-trip data, the layout that writes it back closest to its text, and how
    many lines that layout changes."""
    text = source.read_text(encoding="utf-8")
    data = _yaml().load(text)
    categories = data.get("categories") if hasattr(data, "get") else None
    if not isinstance(categories, list):
        raise ConfigError(f"{source}: no categories list to calibrate")
    # The indentation that writes the unchanged pack back as it is (or closest to it).
    layouts = [(m, s, o) for m in (2, 4) for s, o in ((4, 2), (2, 0), (2, 2), (4, 0), (3, 1))]
    changed, layout = min((_changed_lines(text, _dump(data, layout)), layout) for layout in layouts)
    return data, layout, changed


def _flow(mapping: Mapping[str, Any]) -> Any:
    """A mapping written on one line (``heads: {file: …, sha256: …}``)."""
    from ruamel.yaml.comments import CommentedMap  # noqa: PLC0415 - the calibrate extra

    node = CommentedMap(mapping)
    node.fa.set_flow_style()
    return node


def _yaml(layout: tuple[int, int, int] = (2, 4, 2)) -> Any:
    from ruamel.yaml import YAML  # noqa: PLC0415 - the calibrate extra

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap the policy text
    mapping, sequence, offset = layout
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    yaml.Representer = _representer()
    return yaml


@functools.cache
def _representer() -> Any:
    """ruamel.yaml's round-trip representer with our float representation: a subclass, since
    ``add_representer`` changes the class it is called on for every user of the library."""
    from ruamel.yaml.representer import RoundTripRepresenter  # noqa: PLC0415

    class Representer(RoundTripRepresenter):
        pass

    Representer.add_representer(float, _represent_float)
    return Representer


def _dump(data: Any, layout: tuple[int, int, int]) -> str:
    out = _Buffer()
    _yaml(layout).dump(data, out)
    return out.text


def _changed_lines(before: str, after: str) -> int:
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), n=0, lineterm="")
    return sum(1 for line in diff if line.startswith("-") and not line.startswith("---"))


def _calibration_node(calibration: Calibration) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq  # noqa: PLC0415

    node = CommentedMap(
        (field.name, getattr(calibration, field.name)) for field in dataclasses.fields(calibration)
    )
    if isinstance(calibration, IsotonicCalibration):
        points = CommentedSeq()
        for x, y in calibration.points:
            point = CommentedSeq([x, y])
            point.fa.set_flow_style()
            points.append(point)
        points.fa.set_flow_style()
        node["points"] = points
    elif isinstance(calibration, PlattCalibration | ContextualCalibration):
        node.fa.set_flow_style()  # one line: {method: platt, a: 1.2, b: -0.3}
    return node


def _provenance_node(provenance: CalibrationProvenance) -> Any:
    from ruamel.yaml.comments import CommentedMap  # noqa: PLC0415

    node = CommentedMap()
    for field in dataclasses.fields(provenance):
        value = getattr(provenance, field.name)
        node[field.name] = value.isoformat() if field.name == "created_at" else value
    return node


def _represent_float(representer: Any, value: float) -> Any:
    """A float every YAML reader reads as one: YAML 1.1 (PyYAML, which loads packs) needs a
    dot in the mantissa, so ``1e-06`` is written ``1.0e-06``."""
    text = repr(value)
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return representer.represent_scalar("tag:yaml.org,2002:float", text)


class _Buffer:
    """A text sink for ruamel.yaml's ``dump``."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, data: str | bytes) -> None:
        self.parts.append(data.decode() if isinstance(data, bytes) else data)

    @property
    def text(self) -> str:
        return "".join(self.parts)
