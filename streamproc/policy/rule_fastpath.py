"""Rule expressions as plain Python closures, with rule-engine's meaning, for the hot path.

rule-engine evaluates a parsed expression by walking its tree and checking the type of every
value a symbol resolves to (the rule context is typed when the policy is compiled); that
checking is most of a rule's cost. The fields rules read are built by
:mod:`streamproc.policy.rule_context` with exactly the declared types, so here each node of
the tree rule-engine parsed and type-checked becomes a closure doing what that node's
``evaluate`` does, without the per-value checks.

Only the node kinds the packs use are translated (and, or, not, ``==``, ``!=``, ordering,
arithmetic, regex match and search against a literal pattern (run by RE2, in linear time),
``in``, ``[...]`` and ``&[...]``, literals, fields); a rule with any other node is evaluated by rule-engine
alone. A closure that raises, for whatever reason, is not trusted either: the caller then
evaluates the rule with rule-engine, which gives the outcome and the error message it
always gave (:func:`streamproc.policy.rules` ``_matches``).
"""

from __future__ import annotations

import decimal
import operator
import re
from collections.abc import Callable
from typing import Any, Final, Protocol

import re2  # type: ignore[import-untyped]
import rule_engine  # type: ignore[import-untyped, unused-ignore]
from rule_engine import ast as re_ast  # type: ignore[import-untyped, unused-ignore]
from rule_engine.ast.base import (  # type: ignore[import-untyped, unused-ignore]
    _assert_is_integer_number,
    _assert_is_numeric,
)
from rule_engine.types import coerce_value  # type: ignore[import-untyped, unused-ignore]

__all__ = ["CoercedFields", "compile_closure", "linear_regex", "regex_nodes"]


class CoercedFields(Protocol):
    """Field values as rule-engine holds them once resolved (numbers as ``Decimal``, lists
    as tuples, mappings as ordered dicts): :class:`~streamproc.policy.rule_context.ItemFields`."""

    def coerced(self, name: str) -> Any: ...


Closure = Callable[[CoercedFields], Any]

_LITERALS: Final = (
    re_ast.StringExpression,
    re_ast.FloatExpression,
    re_ast.NullExpression,
    re_ast.BooleanExpression,
)
_ORDER: Final = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}
_ARITHMETIC: Final = {
    "fdiv": operator.floordiv,
    "tdiv": operator.truediv,
    "mod": operator.mod,
    "mul": operator.mul,
    "pow": operator.pow,
}
#: Regex operators: the ``re.Pattern`` method, and whether a match means true.
_REGEX: Final = {
    "eq_fzm": ("match", True),
    "eq_fzs": ("search", True),
    "ne_fzm": ("match", False),
    "ne_fzs": ("search", False),
}


#: Python ``re`` flags rule-engine may compile with, as RE2's inline flags.
_FLAGS: Final = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"))


class _Unsupported(Exception):
    """A node kind not translated here: the rule is left to rule-engine."""


def compile_closure(rule: Any) -> Callable[[CoercedFields], bool] | None:
    """A closure equal to ``rule.matches`` whenever it returns, or None when the expression
    uses a node kind not translated here. ``rule`` is a parsed ``rule_engine.Rule``."""
    arithmetic: list[bool] = []
    try:
        body = _closure(rule.statement.expression, arithmetic)
    except _Unsupported:
        return None
    if not arithmetic:  # comparisons and coercions do not depend on the decimal context
        return lambda fields: bool(body(fields))
    decimal_context = rule.context.decimal_context

    def with_decimal_context(fields: CoercedFields) -> bool:
        with decimal.localcontext(decimal_context):
            return bool(body(fields))

    return with_decimal_context


def _closure(node: Any, arithmetic: list[bool]) -> Closure:  # noqa: PLR0911 - one case per node kind
    kind = type(node)
    if kind is re_ast.SymbolExpression and node.scope is None:
        name = node.name
        return lambda fields: fields.coerced(name)
    if isinstance(node, _LITERALS):
        value = node.value
        return lambda fields: value
    if kind is re_ast.ArrayExpression and all(isinstance(m, _LITERALS) for m in node.value):
        # A literal list such as [] or ['a'], held as rule-engine holds the fields' lists.
        array = coerce_value([member.value for member in node.value], verify_type=False)
        return lambda fields: array
    if kind is re_ast.LogicExpression:
        return _logic(node.type, _closure(node.left, arithmetic), _closure(node.right, arithmetic))
    if kind is re_ast.ComparisonExpression and node.type in ("eq", "ne"):
        return _equality(node.type == "eq", _closure(node.left, arithmetic), _closure(node.right, arithmetic))
    if kind is re_ast.ArithmeticComparisonExpression and node.type in _ORDER:
        return _ordering(node, _closure(node.left, arithmetic), _closure(node.right, arithmetic))
    if kind is re_ast.FuzzyComparisonExpression and isinstance(node.right, re_ast.StringExpression):
        return _regex(node, _closure(node.left, arithmetic))
    if kind is re_ast.ArithmeticExpression and node.type in _ARITHMETIC:
        arithmetic.append(True)
        return _arithmetic(
            _ARITHMETIC[node.type], _closure(node.left, arithmetic), _closure(node.right, arithmetic)
        )
    if kind is re_ast.ContainsExpression:
        return _contains(_closure(node.container, arithmetic), _closure(node.member, arithmetic))
    if kind is re_ast.GetItemExpression:
        return _get_item(node, _closure(node.container, arithmetic), _closure(node.item, arithmetic))
    if kind is re_ast.UnaryExpression and node.type == "not":
        right = _closure(node.right, arithmetic)
        return lambda fields: not right(fields)
    raise _Unsupported(kind.__name__)


def _logic(kind: str, left: Closure, right: Closure) -> Closure:
    if kind == "and":
        return lambda fields: bool(left(fields) and right(fields))
    if kind == "or":
        return lambda fields: bool(left(fields) or right(fields))
    raise _Unsupported(kind)


def _equality(equal: bool, left: Closure, right: Closure) -> Closure:
    # rule-engine: values of different Python types are never equal (1 != true)
    if equal:
        return lambda fields: _equal(left(fields), right(fields))
    return lambda fields: not _equal(left(fields), right(fields))


def _equal(a: Any, b: Any) -> bool:
    return type(a) is type(b) and bool(a == b)


def _ordering(node: Any, left: Closure, right: Closure) -> Closure:
    # the node's own value comparison: nulls, arrays compared item by item, type mismatches
    compare = node._ArithmeticComparisonExpression__op_arithmetic_values
    op = _ORDER[node.type]
    return lambda fields: compare(op, left(fields), right(fields))


def linear_regex(pattern: re.Pattern[str]) -> Any:
    """``pattern`` (as rule-engine compiled it, with its flags) for RE2, which runs in time
    linear in the text: no pattern can stall the worker on an item's text.

    Raises:
        re2.error: RE2 cannot run it (backreferences, lookaround).
    """
    flags = "".join(letter for flag, letter in _FLAGS if pattern.flags & flag)
    options = re2.Options()
    options.log_errors = False  # the caller reports the error, with the rule's id
    return re2.compile(f"(?{flags}){pattern.pattern}" if flags else pattern.pattern, options)


def regex_nodes(rule: Any) -> list[Any]:
    """The regex comparisons anywhere in a parsed ``rule_engine.Rule``, comprehensions included."""
    found, pending = [], [rule.statement.expression]
    while pending:
        node = pending.pop()
        if isinstance(node, re_ast.FuzzyComparisonExpression):
            found.append(node)
        names = set(getattr(node, "__dict__", ()))
        for cls in type(node).__mro__:  # the nodes keep their children in slots
            names.update(getattr(cls, "__slots__", ()))
        for name in names:
            value = getattr(node, name, None)
            values = value if isinstance(value, (list, tuple)) else (value,)
            pending += [v for v in values if isinstance(v, re_ast.ExpressionBase)]
    return found


def _regex(node: Any, left: Closure) -> Closure:
    method, on_match = _REGEX[node.type]
    try:
        find = getattr(linear_regex(node._right), method)
    except re2.error as error:  # streamproc.policy.rules refuses the rule, saying why
        raise _Unsupported("regex") from error

    def regex(fields: CoercedFields) -> bool:
        text = left(fields)
        if text is None:
            return not on_match  # rule-engine: null never matches
        if not isinstance(text, str):
            raise rule_engine.errors.EvaluationError("data type mismatch")
        return (find(text) is not None) is on_match

    return regex


def _arithmetic(op: Callable[[Any, Any], Any], left: Closure, right: Closure) -> Closure:
    def arithmetic(fields: CoercedFields) -> Any:
        a = left(fields)
        _assert_is_numeric(a)
        b = right(fields)
        _assert_is_numeric(b)
        return op(a, b)

    return arithmetic


def _contains(container: Closure, member: Closure) -> Closure:
    def contains(fields: CoercedFields) -> bool:
        values = container(fields)
        value = member(fields)
        if isinstance(values, str | bytes) and type(value) is not type(values):
            raise rule_engine.errors.EvaluationError("data type mismatch")
        return bool(value in values)

    return contains


def _get_item(node: Any, container: Closure, item: Closure) -> Closure:
    safe, coerce = node.safe, node._new_value

    def get_item(fields: CoercedFields) -> Any:
        values = container(fields)
        if values is None:
            if safe:
                return None
            raise rule_engine.errors.EvaluationError("data type mismatch (container is null)")
        key = item(fields)
        if isinstance(values, bytes | str | tuple):
            _assert_is_integer_number(key)
            key = int(key)
        try:
            value = values[key]
        except (IndexError, KeyError):
            if safe:
                return None
            raise
        return coerce(value, verify_type=False)

    return get_item
