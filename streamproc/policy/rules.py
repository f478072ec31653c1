r"""Policy rules: expressions that decide an item before the model or override it after.

A rule's ``when`` is a `rule-engine <https://zerosteiner.github.io/rule-engine/>`_
expression, a small safe language (never Python ``eval``). It is evaluated against the
fields of :mod:`streamproc.policy.rule_fields`, where one table gives each field's type,
the stages that see it and what it holds (:func:`~streamproc.policy.rule_fields_reference`
writes it as markdown for the docs). They are the same for listings and videos: a field
that does not apply to the item is empty (``""``, ``[]``, ``{}``, ``0``) or, for prices and
durations, ``null``; post rules also see what the model scored. Fields are typed when the
policy is compiled, so a misspelled field, an operation on the wrong type or a post-only
field in a pre rule is a :class:`~streamproc.errors.ConfigError`.

Idioms (strings in single or double quotes, with backslashes doubled: ``'\\b'`` is a
regex word boundary, ``'\b'`` is not; ``=~`` is a regex match from the start of the string,
``=~~`` a regex search anywhere)::

    'banned_sellers' in owner_lists
    'blocked_terms' in text_lists
    owner_id in lists['banned_sellers']
    $any([term.as_lower in text for term in lists['blocked_terms']])
    text =~~ '\\b(replica|aaa grade)\\b'
    attributes&['brand'] != null and median_price != null and price < median_price * 0.2
    attributes&['first_listing'] == 'true' and category_path&[0] == 'Health'
    decision == 'approve' and max_score > 0.3
    scores['counterfeit'] > 0.3

Mappings are read with brackets, ``attributes['brand']``, never ``attributes.brand``
(deprecated in rule-engine 5, the minimum version). ``&[`` is null-safe:
``attributes&['brand']`` is ``null`` when the item has no brand, where
``attributes['brand']`` is an error. ``lists[...]`` and ``scores[...]`` with a literal name,
and ``'name' in owner_lists`` / ``text_lists``, are checked against the policy when it is
compiled.

Prefer ``owner_lists`` and ``text_lists`` for lists of more than a few dozen entries: their
cost does not grow with the lists, while ``owner_id in lists['name']`` scans the list, and a
comprehension (``$any([...])`` above) is left to rule-engine itself (see below), which costs
about 3 µs per entry of all the policy's lists per item (it checks every value it reads) and
about 30 µs more per term. ``lists`` suits short lists and forms the precomputed fields do
not cover, e.g. substrings (``term in text``) or ``category_path&[0] in lists['regulated_roots']``.

Evaluation: each field is computed when a rule of the item first reads it
(:class:`~streamproc.policy.rule_context.ItemFields`), and the expression forms above (and,
or, not, comparisons, arithmetic, regex against a literal, ``in``, ``[...]``, ``&[...]``) run
as plain closures with rule-engine's meaning (:mod:`streamproc.policy.rule_fastpath`);
comprehensions, functions, attributes such as ``.as_lower`` and a closure that raises are
evaluated by rule-engine, so outcomes and error messages are rule-engine's.

A rule is a yes/no question: an expression that gives a number or a string (``price``,
``attributes&['brand']``) is rejected; compare it (``!= null``, ``> 0``). An error while
evaluating one item, such as arithmetic on a ``null`` price or ``category_path[2]`` on a
shorter path, does not stop the item: :meth:`CompiledRules.evaluate_pre` and
:meth:`CompiledRules.evaluate_post` report it, and the decision path fails closed (the rule
might have matched, so the item is not approved: it goes to review, counted in
``streamproc_rule_errors_total``). Guard nullable fields (``median_price != null and ...``)
and use ``&[`` for indexes that may be missing.

Regexes run on RE2 (``google-re2``), in time linear in the text, so no pattern can stall the
worker on a hostile item: ``\w``, ``\d`` and ``\b`` are ASCII (``\pL`` is a letter of any
script), and backreferences, lookaround and a regex inside a comprehension are refused when
the pack loads.

Rules are tried in policy order and the first that matches decides. A post rule's decision
replaces the model's, so one that should only escalate says so (``decision == 'approve'``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, get_args

import rule_engine  # type: ignore[import-untyped, unused-ignore]

from streamproc.errors import ConfigError
from streamproc.policy.model import Policy, Rule
from streamproc.policy.rule_checks import (
    InvalidRule,
    check_boolean,
    check_literal_names,
    check_regexes,
    compile_message,
)
from streamproc.policy.rule_context import ItemFields, Lookups, post_fields
from streamproc.policy.rule_fastpath import CoercedFields, compile_closure
from streamproc.policy.rule_fields import field_types
from streamproc.policy.rule_match import RuleSpan, rule_span
from streamproc.schemas import ContentEvent, Decision

__all__ = ["CompiledRules", "RuleError", "RuleHit", "RuleOutcome"]

_DECISIONS: Final = frozenset(get_args(Decision))
_STAGES: Final = frozenset({"pre", "post"})


@dataclass(frozen=True)
class RuleHit:
    """What a matching rule decided."""

    rule_id: str
    decision: Decision
    reason_code: str
    seller_message: str
    #: The policy category the decision is attributed to, if the rule names one.
    category: str | None


@dataclass(frozen=True)
class RuleError:
    """A rule that failed to evaluate for one item (the decision path then never approves it)."""

    rule_id: str
    stage: str
    message: str


@dataclass(frozen=True)
class RuleOutcome:
    """The first matching rule of a stage, and the rules tried before it that failed."""

    hit: RuleHit | None
    errors: tuple[RuleError, ...] = ()


class _Matcher(Protocol):
    """The part of ``rule_engine.Rule`` used here (the library ships no type hints)."""

    def matches(self, thing: Mapping[str, Any]) -> bool: ...


@dataclass(frozen=True)
class _CompiledRule:
    rule: Rule
    matcher: _Matcher
    #: The fields the expression reads.
    fields: frozenset[str]
    #: ``matcher.matches`` as a closure, where rule_fastpath translates the expression.
    fast: Callable[[CoercedFields], bool] | None = None
    #: The expression matches a regex: only the closure runs it (RE2, linear time).
    regex: bool = False

    def hit(self) -> RuleHit:
        r = self.rule
        return RuleHit(r.id, r.decision, r.reason_code, r.seller_message, r.category)


class CompiledRules:
    """A policy's rules, parsed and type-checked once, ready to evaluate against items.

    Evaluation is pure and thread-safe; it never raises for a single item's data.
    """

    def __init__(self, policy: Policy, pre: Sequence[_CompiledRule], post: Sequence[_CompiledRule]) -> None:
        """Use :meth:`compile`."""
        self._pre = tuple(pre)
        self._post = tuple(post)
        # The one field whose cost grows with the text (and its index with the lists):
        # computed only if a rule reads it.
        self._text_lists = any("text_lists" in c.fields for c in self._pre + self._post)
        self._lookups = Lookups.of(policy, text_lists=self._text_lists)

    @classmethod
    def compile(cls, policy: Policy) -> CompiledRules:
        """Parse and type-check every rule of ``policy``.

        Args:
            policy: The policy whose ``rules`` to compile; its lists, median prices and
                category ids are what the rules may refer to.

        Returns:
            The compiled rules, pre and post stage each in policy order.

        Raises:
            ConfigError: A rule has a syntax error, an unknown field, a type error, a
                non-boolean result, an unknown list or score name, an unknown stage,
                decision or category, or a duplicate id. The message names every such
                rule and its problem.
        """
        problems: list[str] = []
        compiled: list[_CompiledRule] = []
        seen: set[str] = set()
        for rule in policy.rules:
            if rule.id in seen:
                problems.append(f"rule {rule.id!r}: the id is used by an earlier rule; ids must be distinct")
                continue
            seen.add(rule.id)
            try:
                compiled.append(_compile_rule(rule, policy))
            except InvalidRule as problem:
                problems.append(f"rule {rule.id!r}: {problem}")
        if problems:
            raise ConfigError(f"policy {policy.name} has invalid rules:\n  " + "\n  ".join(problems))
        return cls(
            policy,
            pre=[c for c in compiled if c.rule.stage == "pre"],
            post=[c for c in compiled if c.rule.stage == "post"],
        )

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """Ids of the compiled rules: pre rules, then post rules, each in policy order."""
        return tuple(c.rule.id for c in self._pre + self._post)

    def pre(self, event: ContentEvent) -> RuleHit | None:
        """The first pre rule matching ``event``, in policy order; ``None`` if none does.

        Args:
            event: The item, before the model has seen it.

        Returns:
            What the matching rule decided, or ``None`` to ask the model.
        """
        return self.evaluate_pre(event).hit

    def post(self, event: ContentEvent, scores: Mapping[str, float], decision: Decision) -> RuleHit | None:
        """The first post rule matching ``event`` and its model result, in policy order.

        Args:
            event: The item.
            scores: Score per category id, as the scorer gave them.
            decision: The decision the thresholds gave for ``scores``.

        Returns:
            What the matching rule decided (it replaces ``decision``), or ``None`` to keep
            the model's decision.
        """
        return self.evaluate_post(event, scores, decision).hit

    def context(self, event: ContentEvent, clipped: Sequence[str] | None = None) -> Mapping[str, Any]:
        """The fields of ``event`` that every rule sees; empty when there are no rules.

        Each field is computed when a rule first reads it (``text_lists`` scans the text),
        and kept: build this once per item and pass it to both stages. ``clipped``: the
        item's ``clipped_fields``, when its windows are built already.
        """
        if not (self._pre or self._post):
            return {}
        return ItemFields(self._lookups, event, text_lists=self._text_lists, clipped=clipped)

    def evaluate_pre(self, event: ContentEvent, *, context: Mapping[str, Any] | None = None) -> RuleOutcome:
        """Like :meth:`pre`, with the rules that failed to evaluate (and did not match).

        ``context`` is :meth:`context` of ``event``, if already built.
        """
        if not self._pre:
            return RuleOutcome(None)
        return _first_match(self._pre, context if context is not None else self.context(event))

    def evaluate_post(
        self,
        event: ContentEvent,
        scores: Mapping[str, float],
        decision: Decision,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> RuleOutcome:
        """Like :meth:`post`, with the rules that failed to evaluate (and did not match).

        ``context`` is :meth:`context` of ``event``, if already built.
        """
        if not self._post:
            return RuleOutcome(None)
        base = context if context is not None else self.context(event)
        if isinstance(base, ItemFields):
            return _first_match(self._post, base.with_post(scores, decision))
        return _first_match(self._post, {**base, **post_fields(scores, decision)})

    def span(self, rule_id: str, context: Mapping[str, Any]) -> RuleSpan | None:
        """Where rule ``rule_id``, which matched the item of ``context`` (:meth:`context`),
        matched it: its field and matched text (:mod:`streamproc.policy.rule_match`); None
        when the rule's form cannot say, or no rule has that id."""
        compiled = next((c for c in self._pre + self._post if c.rule.id == rule_id), None)
        if compiled is None:
            return None
        return rule_span(compiled.matcher, context, self._lookups.lists)


def _first_match(rules: Sequence[_CompiledRule], context: Mapping[str, Any]) -> RuleOutcome:
    errors: list[RuleError] = []
    fields = context if isinstance(context, ItemFields) else None
    for compiled in rules:
        try:
            matched = _matches(compiled, context, fields)
        except Exception as error:  # noqa: BLE001 - whatever one item's data does to a rule
            # One item's data (a null price, a short category path) must not stop the worker.
            errors.append(RuleError(compiled.rule.id, compiled.rule.stage, _evaluation_message(error)))
            continue
        if matched:
            return RuleOutcome(compiled.hit(), tuple(errors))
    return RuleOutcome(None, tuple(errors))


def _matches(compiled: _CompiledRule, context: Mapping[str, Any], fields: ItemFields | None) -> bool:
    if compiled.fast is not None and fields is not None:
        try:
            return compiled.fast(fields)
        except Exception:
            if compiled.regex:  # rule-engine would run the regex with backtracking
                raise
            # rule-engine decides, and words the error as always
    return bool(compiled.matcher.matches(context))


def _compile_rule(rule: Rule, policy: Policy) -> _CompiledRule:
    """Parse and check one rule; raises :class:`InvalidRule` with the first problem."""
    if rule.stage not in _STAGES:
        raise InvalidRule(f"stage must be 'pre' or 'post', got {rule.stage!r}")
    if rule.decision not in _DECISIONS:
        raise InvalidRule(f"decision must be one of {sorted(_DECISIONS)}, got {rule.decision!r}")
    if rule.category is not None and rule.category not in policy.category_ids:
        raise InvalidRule(
            f"category {rule.category!r} is not a category of the policy; known: {list(policy.category_ids)}"
        )
    types = field_types(rule.stage)
    # mapping_attribute_lookup=False: ``mapping.key`` is deprecated in rule-engine 5 (warns on
    # every new context, removed in 6), so make it a compile-time error. The option is also
    # why 5.0 is the minimum: 4.x rejects typed fields holding an empty list or mapping.
    context = rule_engine.Context(
        type_resolver=rule_engine.type_resolver_from_dict(types), mapping_attribute_lookup=False
    )
    try:
        matcher: _Matcher = rule_engine.Rule(rule.when, context=context)
    except rule_engine.EngineError as error:
        raise InvalidRule(compile_message(error, rule)) from None
    check_boolean(matcher)
    check_literal_names(rule.when, policy)
    fast = compile_closure(matcher)
    regex = check_regexes(matcher, fast is not None)
    # Context.symbols: every name the parsed expression refers to.
    return _CompiledRule(rule, matcher, frozenset(context.symbols), fast, regex)


def _evaluation_message(error: Any) -> str:
    message = str(getattr(error, "message", error))
    if isinstance(error, rule_engine.errors.LookupError):
        # Name the missing key, not the (possibly large) container.
        return f"{message}: no item {getattr(error, 'item', None)!r}"
    return message
