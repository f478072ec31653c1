"""Policy packs: YAML files that analysts edit, loaded into frozen Policy objects.

A pack applies to one content type and, optionally, to some verticals (the first element
of a listing's category path, e.g. "Health"). Per content type there is exactly one pack
without verticals: the default for everything the others do not claim. Validation errors
name the file and line.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import TypeAdapter, ValidationError

from streamproc.errors import ConfigError, describe_validation_error
from streamproc.policy.heads import load_heads
from streamproc.policy.model import Policy
from streamproc.policy.rules import CompiledRules
from streamproc.policy.scorers import SCORERS
from streamproc.schemas import ContentEvent, ContentType

__all__ = [
    "PolicySet",
    "load_pack",
    "load_policy_set",
    "pack_files",
]


def _with_labels(data: Any) -> Any:
    """Pack files may leave category labels out: each then gets the first capital letter
    that neither another category nor ``safe_label`` uses, in file order."""
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
        return data  # not a pack: validation says why
    # only strings: a label of another type is left to validation to name
    labels = [c.get("label") for c in data["categories"] if isinstance(c, dict)] + [
        data.get("safe_label", "N")
    ]
    taken = {label for label in labels if isinstance(label, str)}
    free = iter([letter for letter in string.ascii_uppercase if letter not in taken])
    categories = []
    for category in data["categories"]:
        letter = next(free, None) if isinstance(category, dict) and not category.get("label") else None
        categories.append(category if letter is None else {**category, "label": letter})
    return {**data, "categories": categories}


#: Checks a pack file's content against the constraints the policy's types declare.
_PACK: Final = TypeAdapter(Policy)


def _line_of(root: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """1-based line of the deepest YAML node on a pydantic error path."""
    node, line = root, None
    for key in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def load_pack(path: Path) -> Policy:
    """Read, validate and freeze one pack; errors say ``FILE:LINE: field: problem``."""
    text = _read(path)
    try:
        data: Any = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    except RecursionError as exc:  # the YAML parser recurses per level of nesting
        raise ConfigError(f"{path}: nests too deeply to be a policy pack") from exc
    if isinstance(data, dict) and "probe" in data:
        raise ConfigError(f"{path}: `probe` is not a pack key; name the heads file under `heads:`")
    try:
        policy = _PACK.validate_python(_with_labels(data))
    except ValidationError as exc:
        raise ConfigError(
            describe_validation_error(
                exc, whole="(pack)", where=lambda loc: f"{path}:{_line_of(root, loc) or 1}", separator="\n"
            )
        ) from exc
    try:
        CompiledRules.compile(policy)
    except ConfigError as exc:
        raise ConfigError(_rule_problems(path, root, policy, str(exc))) from exc
    if policy.scorer not in SCORERS:
        raise ConfigError(f"{path}: scorer {policy.scorer!r} is not available; choose from {sorted(SCORERS)}")
    if policy.heads is not None:
        heads = load_heads(path.parent / policy.heads.file, policy.heads.sha256, policy.category_ids)
        policy = dataclasses.replace(policy, probe=heads)
    return policy


def _read(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read policy pack: {exc.strerror}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x}); save the pack as UTF-8"
        ) from exc


def _rule_problems(path: Path, root: yaml.Node | None, policy: Policy, message: str) -> str:
    """The rules' problems, one ``FILE:LINE: rule 'ID': problem`` line each (the line of
    the rule's ``when``); CompiledRules words each problem as ``rule 'ID': problem``."""
    lines = []
    for line in message.splitlines()[1:]:
        problem = line.strip()
        named = [i for i, rule in enumerate(policy.rules) if problem.startswith(f"rule {rule.id!r}:")]
        # a repeated id is reported at its later use, every other problem at the first
        index = (named[-1] if "used by an earlier rule" in problem else named[0]) if named else None
        loc: tuple[int | str, ...] = ("rules", index, "when") if index is not None else ("rules",)
        lines.append(f"{path}:{_line_of(root, loc) or 1}: {problem}")
    return "\n".join(lines) or f"{path}: {message}"


def pack_files(paths: Iterable[Path]) -> list[Path]:
    """The YAML files named, or found directly in the folders named."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"})
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"policy path {path} does not exist; set STREAMPROC_POLICY__PATHS")
    return files


class PolicySet:
    """The packs in force, with their compiled rules.

    Live packs: one default per content type, plus packs for some verticals; ``select``
    picks the one that decides an item. Shadow packs (candidates) follow the same
    selection and never decide: ``shadows`` lists those an item is also run through.
    """

    def __init__(self, policies: Sequence[Policy]) -> None:
        every = tuple(policies)
        #: The live packs (what ``select`` chooses from).
        self.policies = tuple(p for p in every if p.mode == "live")
        #: The candidate packs, run beside the live ones.
        self.shadow_policies = tuple(p for p in every if p.mode == "shadow")
        for content_type in ("listing", "video"):
            defaults = [p.name for p in self.policies if p.content_type == content_type and not p.verticals]
            shadows = [p.name for p in self.shadow_policies if p.content_type == content_type]
            if shadows and not any(p.content_type == content_type for p in self.policies):
                raise ConfigError(
                    f"shadow packs {shadows} are the only {content_type} packs; a shadow runs beside a "
                    f"live pack: also load the live packs (e.g. policies/ next to policies/candidates/)"
                )
            if len(defaults) != 1:
                raise ConfigError(
                    f"need exactly one {content_type} pack without verticals (the default, mode live), "
                    f"found {defaults or 'none'}"
                )
        names = [p.name for p in every]
        if len(set(names)) != len(names):
            raise ConfigError(f"pack names must be unique, got {names}")
        self._rules = {p.name: CompiledRules.compile(p) for p in every}

    def select(self, event: ContentEvent) -> Policy:
        """The live pack for this event: its vertical's, else its content type's default."""
        content_type, vertical = _selector(event)
        default: Policy | None = None
        for policy in self.policies:
            if policy.content_type != content_type:
                continue
            if vertical is not None and vertical in {v.casefold() for v in policy.verticals}:
                return policy
            if not policy.verticals:
                default = policy
        assert default is not None  # noqa: S101 - checked in __init__
        return default

    def shadows(self, event: ContentEvent, live: Policy | None = None) -> tuple[Policy, ...]:
        """The shadow packs for this event, before sampling: those for its vertical, and the
        default candidates (no verticals) when the live default decides it. ``live``: what
        ``select`` chose for it, if the caller has it already."""
        if not self.shadow_policies:
            return ()
        content_type, vertical = _selector(event)
        live_default = not (live or self.select(event)).verticals
        return tuple(
            p
            for p in self.shadow_policies
            if p.content_type == content_type
            and (vertical in {v.casefold() for v in p.verticals} if p.verticals else live_default)
        )

    def rules(self, policy: Policy) -> CompiledRules:
        return self._rules[policy.name]

    @property
    def versions(self) -> dict[str, str]:
        """Live packs: name → version."""
        return {p.name: p.version for p in self.policies}

    @property
    def shadow_versions(self) -> dict[str, str]:
        """Shadow packs: name → version."""
        return {p.name: p.version for p in self.shadow_policies}

    @property
    def category_ids(self) -> tuple[str, ...]:
        return tuple(sorted({c for p in self.policies for c in p.category_ids}))


def _selector(event: ContentEvent) -> tuple[ContentType, str | None]:
    """(content type, case-folded vertical) that pack selection goes by; videos have none."""
    if event.content_type == "listing" and event.category_path:
        return event.content_type, event.category_path[0].casefold()
    return event.content_type, None


def load_policy_set(paths: Iterable[Path]) -> PolicySet:
    files = pack_files(paths)
    if not files:
        raise ConfigError("no policy packs (*.yaml) found; set STREAMPROC_POLICY__PATHS to files or folders")
    return PolicySet(tuple(load_pack(f) for f in files))
