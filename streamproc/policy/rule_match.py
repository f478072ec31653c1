"""Where a rule matched an item, for the verdict's explanation: the field and the text that
made it match, found without evaluating the expression again.

The matching rule's expression is walked in source order through ``and`` / ``or``: a regex
match or search against a literal (``text =~~ '...'``) runs on RE2 against the field it
reads, and ``'name' in text_lists`` looks up which of the list's entries occurs in ``text``
(``'name' in owner_lists``: the owner id). The first part that finds its text is the match;
in an ``or`` whose regex branch did not match, the next part is tried. Parts under ``not``, a
negated regex (``!~``) and other forms (comparisons, comprehensions, functions) point at no
text: then there is no span, and the explanation names only the rule.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from rule_engine import ast as re_ast  # type: ignore[import-untyped, unused-ignore]

from streamproc.policy.rule_context import first_entry
from streamproc.policy.rule_fastpath import linear_regex
from streamproc.schemas.explanation import MAX_EXPLANATION_CHARS

__all__ = ["RuleSpan", "rule_span"]

#: Regex operators that hold when the pattern matches: the ``re.Pattern`` method each runs.
_POSITIVE_REGEX: Final = {"eq_fzm": "match", "eq_fzs": "search"}


@dataclass(frozen=True)
class RuleSpan:
    """What a rule matched: ``text`` occurs at [start, end) of rule field ``field`` (as rules
    read it: ``text`` is the folded text), cut to ``MAX_EXPLANATION_CHARS`` (the offsets are not)."""

    field: str
    text: str
    start: int
    end: int
    #: ``text_lists`` / ``owner_lists``: the list, and its entry that occurred.
    list_name: str | None = None
    entry: str | None = None


def rule_span(rule: Any, fields: Mapping[str, Any], lists: Mapping[str, Sequence[str]]) -> RuleSpan | None:
    """Where the parsed ``rule_engine.Rule`` ``rule`` matched the item whose rule fields are
    ``fields`` (the policy's ``lists`` by name); None when no part of it can say.

    Only call it for a rule that matched: a span says why a match happened, never whether.
    """
    for node in _positive_parts(rule.statement.expression):
        if isinstance(node, re_ast.FuzzyComparisonExpression):
            span = _regex_span(node, fields)
        elif type(node) is re_ast.ContainsExpression:
            span = _list_span(node, fields, lists)
        else:
            continue
        if span is not None:
            return span
    return None


def _positive_parts(node: Any) -> Iterator[Any]:
    """The operands of an and/or tree, left to right; a ``not`` is one opaque operand."""
    if type(node) is re_ast.LogicExpression:
        yield from _positive_parts(node.left)
        yield from _positive_parts(node.right)
    else:
        yield node


def _regex_span(node: Any, fields: Mapping[str, Any]) -> RuleSpan | None:
    method = _POSITIVE_REGEX.get(node.type)
    pattern = getattr(node, "_right", None)  # the pattern rule-engine compiled from the literal
    name = _field_name(node.left)
    if method is None or pattern is None or name is None or name not in fields:
        return None
    value = fields[name]
    if not isinstance(value, str):
        return None
    found = getattr(_linear(pattern), method)(value)
    if found is None:  # another part of an ``or`` matched
        return None
    return RuleSpan(name, found.group(0)[:MAX_EXPLANATION_CHARS], found.start(), found.end())


def _list_span(node: Any, fields: Mapping[str, Any], lists: Mapping[str, Sequence[str]]) -> RuleSpan | None:
    container, member = _field_name(node.container), node.member
    if not isinstance(member, re_ast.StringExpression) or member.value not in lists:
        return None
    name, entries = member.value, lists[member.value]
    if container == "text_lists" and "text" in fields:
        text = fields["text"]
        found = first_entry(entries, text) if isinstance(text, str) else None
        if found is None:
            return None
        entry, start, end = found
        return RuleSpan(
            "text", text[start:end][:MAX_EXPLANATION_CHARS], start, end, name, entry[:MAX_EXPLANATION_CHARS]
        )
    if container == "owner_lists" and "owner_id" in fields:
        owner = fields["owner_id"]
        if isinstance(owner, str) and owner in entries:
            cut = owner[:MAX_EXPLANATION_CHARS]
            return RuleSpan("owner_id", cut, 0, len(owner), name, cut)
    return None


def _field_name(node: Any) -> str | None:
    if type(node) is re_ast.SymbolExpression and node.scope is None:
        name: str = node.name
        return name
    return None


@functools.lru_cache(maxsize=256)
def _linear(pattern: re.Pattern[str]) -> Any:
    # The policy's patterns are few and compiled once; rules.py checked each runs on RE2.
    return linear_regex(pattern)
