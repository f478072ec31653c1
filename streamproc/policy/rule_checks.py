"""Compile-time checks of one policy rule, beyond rule-engine's own parsing and typing: a
yes/no result, list and category names that exist, regexes RE2 can run. Each problem is an
:class:`InvalidRule`, which :meth:`streamproc.policy.rules.CompiledRules.compile` collects
into one error naming every invalid rule."""

from __future__ import annotations

import difflib
import re
from typing import Any, Final

import re2  # type: ignore[import-untyped]
import rule_engine  # type: ignore[import-untyped, unused-ignore]

from streamproc.policy.model import Policy, Rule
from streamproc.policy.rule_fastpath import linear_regex, regex_nodes
from streamproc.policy.rule_fields import POST_RULE_FIELDS, RULE_FIELDS

__all__ = ["InvalidRule", "check_boolean", "check_literal_names", "check_regexes", "compile_message"]

_T = rule_engine.DataType
# Names written as literals, checked against the policy at compile time since rule-engine
# types a mapping's values but not its keys and a misspelled name would never match:
# ``lists['name']``, ``scores["id"]``, ``'name' in owner_lists``.
_QUOTED_NAME = r"""(?:'(?P<name>[^'\\]*)'|"(?P<name2>[^"\\]*)")"""
_LITERAL_NAMES: Final = (
    re.compile(r"\b(?P<field>lists|scores)\s*&?\[\s*" + _QUOTED_NAME + r"\s*\]"),
    re.compile(_QUOTED_NAME + r"\s+in\s+(?P<field>owner_lists|text_lists)\b"),
)


class InvalidRule(Exception):
    """One problem with one rule; :meth:`~streamproc.policy.rules.CompiledRules.compile` collects them."""


def check_regexes(matcher: Any, translated: bool) -> bool:
    """Whether the rule matches regexes; raises :class:`InvalidRule` for one that could
    backtrack: every regex runs on RE2 (time linear in the item's text), never on ``re``."""
    nodes = regex_nodes(matcher)
    for node in nodes:
        pattern = getattr(node, "_right", None)
        if pattern is None:
            raise InvalidRule("a regex must be a literal string ('...'), not computed from a field")
        try:
            linear_regex(pattern)
        except re2.error as error:
            raise InvalidRule(
                f"regex {pattern.pattern!r} cannot run in linear time ({error}): backreferences and "
                "lookaround are not supported; rewrite it without them"
            ) from None
    if nodes and not translated:
        raise InvalidRule(
            "a regex match is supported in and/or/not combinations of comparisons only, not inside "
            "a comprehension or function; match `text` or a field directly"
        )
    return bool(nodes)


def check_boolean(matcher: Any) -> None:
    # rule-engine would take any truthy value as a match; ``price`` alone is almost surely a
    # mistake. The result type lives on the parsed statement (read defensively: not API).
    result_type = getattr(
        getattr(getattr(matcher, "statement", None), "expression", None), "result_type", None
    )
    if result_type is None or _T.NULLABLE.unwrap(result_type) in (_T.BOOLEAN, _T.UNDEFINED):
        return
    name = getattr(result_type, "name", str(result_type))
    raise InvalidRule(
        f"the expression gives a {name}, not true/false; compare it, e.g. `... != null` or `... > 0`"
    )


def check_literal_names(text: str, policy: Policy) -> None:
    list_names = [name for name, _ in policy.lists]
    for pattern in _LITERAL_NAMES:
        for match in pattern.finditer(text):
            field, name = match["field"], match["name"] if match["name"] is not None else match["name2"]
            if field == "scores" and name not in policy.category_ids:
                raise InvalidRule(f"scores has no category {name!r}; categories: {list(policy.category_ids)}")
            if field != "scores" and name not in list_names:
                raise InvalidRule(f"the policy has no list {name!r} ({field}); lists: {list_names}")


def compile_message(error: Any, rule: Rule) -> str:
    message = str(getattr(error, "message", error))
    if isinstance(error, rule_engine.SymbolResolutionError):
        name = error.symbol_name
        if name in POST_RULE_FIELDS and rule.stage == "pre":
            return f"unknown field {name!r}: {', '.join(POST_RULE_FIELDS)} exist only in post rules"
        known = RULE_FIELDS + POST_RULE_FIELDS if rule.stage == "post" else RULE_FIELDS
        # difflib rather than rule-engine's suggestion, which always offers one ("zzz" → "content_type").
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            return f"unknown field {name!r} (did you mean {close[0]!r}?)"
        return f"unknown field {name!r}; fields: {', '.join(known)}"
    if isinstance(error, rule_engine.errors.SyntaxError):
        return message if message.startswith("syntax error") else f"syntax error: {message}"
    return f"type error: {message}"
