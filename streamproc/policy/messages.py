"""Seller messages in the seller's language: a pack's default text, its translations keyed by
locale, and the choice of one for an item's locale. Pure."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BeforeValidator, StringConstraints

from streamproc.policy.pack_fields import SortedItems

__all__ = [
    "DEFAULT_MESSAGE_LOCALE",
    "LocaleKey",
    "LocalizedText",
    "SellerMessage",
    "Translations",
    "language",
    "missing_translations",
    "normalise_locale",
]

#: The language of a pack's plain ``seller_message`` texts unless it says otherwise.
DEFAULT_MESSAGE_LOCALE: Final = "en"
#: What events may say (streamproc.schemas.common.Locale): ``pt-BR``, ``pt_br``, ``zh-Hant-TW``.
_LOCALE_PATTERN: Final = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"


def normalise_locale(value: str) -> str:
    """BCP 47 case and separators: ``pt_br`` → ``pt-BR``, ``ZH-hant-tw`` → ``zh-Hant-TW``."""
    first, *rest = value.replace("_", "-").split("-")
    parts = [first.lower()]
    for part in rest:
        if len(part) == 4 and part.isalpha():  # script
            parts.append(part.title())
        elif len(part) == 2 and part.isalpha():  # region
            parts.append(part.upper())
        else:  # numeric region (419), variants
            parts.append(part.lower())
    return "-".join(parts)


def language(locale: str) -> str:
    """``pt-BR`` → ``pt``."""
    return normalise_locale(locale).split("-", 1)[0]


def _lookup_chain(locale: str) -> Iterator[str]:
    """The locale, then each shorter prefix down to its language (RFC 4647 lookup):
    ``zh-Hant-TW``, ``zh-Hant``, ``zh``."""
    parts = normalise_locale(locale).split("-")
    for end in range(len(parts), 0, -1):
        yield "-".join(parts[:end])


def _distinct_after_normalising(value: Any) -> Any:
    # The mapping would otherwise keep one of ``pt-br`` and ``pt-BR`` silently.
    if isinstance(value, Mapping):
        keys = [normalise_locale(k) for k in value if isinstance(k, str)]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise ValueError(
                f"locales {repeated} are given more than once (keys differing only in case or _)"
            )
    return value


#: A locale a pack translates into, normalised on load (``pt-br`` → ``pt-BR``).
LocaleKey = Annotated[
    str, StringConstraints(pattern=_LOCALE_PATTERN, max_length=35), AfterValidator(normalise_locale)
]
_Text = Annotated[str, StringConstraints(min_length=1), AfterValidator(str.strip)]
#: ``{de: "...", pt-BR: "..."}`` in a pack; sorted (locale, text) pairs in the policy.
Translations = Annotated[
    tuple[tuple[str, str], ...],
    SortedItems(dict[LocaleKey, _Text]),
    BeforeValidator(_distinct_after_normalising),
]


@dataclass(frozen=True)
class SellerMessage:
    """The message chosen for one item."""

    text: str
    #: The locale ``text`` is written in; None when there is no message.
    locale: str | None
    #: Neither the item's locale nor its language had a text: ``text`` is the default, in
    #: another language than the item's.
    fallback: bool = False


@dataclass(frozen=True)
class LocalizedText:
    """A default text in ``locale``, and its translations."""

    text: str
    locale: str = DEFAULT_MESSAGE_LOCALE
    translations: tuple[tuple[str, str], ...] = ()

    def choose(self, locale: str) -> SellerMessage:
        """The text for a reader in ``locale``: its exact locale (``pt-BR``), then each shorter
        prefix (``pt``), else the default."""
        if not self.text:
            return SellerMessage("", None)
        texts = {normalise_locale(self.locale): self.text, **dict(self.translations)}
        for candidate in _lookup_chain(locale):
            if candidate in texts:
                return SellerMessage(texts[candidate], candidate)
        return SellerMessage(self.text, self.locale, fallback=language(self.locale) != language(locale))

    def covers(self, locale: str) -> bool:
        """Whether a reader in ``locale`` gets a text in their language, not the default in another."""
        return not self.choose(locale).fallback


def missing_translations(
    messages: Mapping[str, LocalizedText], fixed: Mapping[str, LocalizedText] | None = None
) -> dict[str, tuple[str, ...]]:
    """What → locales it lacks: each message (and each ``fixed`` one, which the pack cannot
    change) against the locales some of ``messages`` translate into. A message lacks a locale
    when its readers there would get the default in another language (a ``pt`` text serves
    ``pt-BR``; a ``pt-BR`` text does not serve ``pt``)."""
    wanted = sorted({locale for text in messages.values() for locale, _ in text.translations})
    missing = {}
    for what, text in {**messages, **(fixed or {})}.items():
        lacking = tuple(locale for locale in wanted if text.text and not text.covers(locale))
        if lacking:
            missing[what] = lacking
    return missing
