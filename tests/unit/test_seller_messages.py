"""Seller messages in the item's language: pack translations, the fallback chain, the verdict's
locale fields, and `policy check`'s warnings about missing translations."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamproc.cli import cli
from streamproc.decision import decide, decide_on_error, decide_verdict
from streamproc.decision.thresholds import decide_on_rule_error
from streamproc.errors import ConfigError, InferenceTimeout
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.policy import Policy, load_pack
from streamproc.policy.messages import LocalizedText, SellerMessage, normalise_locale
from streamproc.policy.rules import CompiledRules
from streamproc.schemas import SourceRef, Verdict
from tests.factories import decided_verdict, listing

PACK = """\
name: localized
content_type: listing
preamble: Read the item.
categories:
  - id: counterfeit
    title: Counterfeit
    description: Fakes.
    reason_code: COUNTERFEIT
    seller_message: Counterfeit goods are not allowed.
    seller_messages:
      de: Gefälschte Waren sind nicht erlaubt.
      pt: Não são permitidos artigos contrafeitos.
      pt-br: Produtos falsificados não são permitidos.
    thresholds: {reject: 0.9, review: 0.5}
  - id: spam
    title: Spam
    description: Spam.
    reason_code: SPAM
    seller_message: Spam is not allowed.
    seller_messages: {de: Spam ist nicht erlaubt., pt: Spam não é permitido.}
    thresholds: {reject: 0.9, review: 0.5}
lists:
  blocked_terms: [replica]
rules:
  - id: blocked
    stage: pre
    when: "'blocked_terms' in text_lists"
    decision: reject
    reason_code: BLOCKED
    seller_message: This listing uses blocked terms.
    seller_messages:
      de: Dieses Angebot verwendet gesperrte Begriffe.
      pt: Este anúncio usa termos bloqueados.
  - id: off-platform
    stage: pre
    when: text =~~ 'whatsapp'
    decision: review
    category: spam
    reason_code: OFF_PLATFORM
"""


def _pack(tmp_path: Path, text: str = PACK) -> Policy:
    path = tmp_path / "localized.yaml"
    path.write_text(text)
    return load_pack(path)


class NoModel:
    """A model server that fails every request (``error``), or must never be asked."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        raise self.error or AssertionError("a pre-rule decides without the model")


async def _verdict(policy: Policy, model: NoModel, **event: str) -> Verdict:
    verdict, _ = await decide_verdict(
        policy,
        CompiledRules.compile(policy),
        listing(**event),
        model,
        model_name="m",
        source=SourceRef(topic="t", partition=0, offset=1),
        received=time.perf_counter(),
        clock=lambda: datetime.now(UTC),
    )
    return verdict


@pytest.mark.parametrize(
    ("locale", "message", "used", "fallback"),
    [
        ("pt-BR", "Produtos falsificados não são permitidos.", "pt-BR", False),  # exact locale
        ("pt-PT", "Não são permitidos artigos contrafeitos.", "pt", False),  # then its language
        ("de-DE", "Gefälschte Waren sind nicht erlaubt.", "de", False),
        ("de-AT", "Gefälschte Waren sind nicht erlaubt.", "de", False),
        (
            "pt_br",
            "Produtos falsificados não são permitidos.",
            "pt-BR",
            False,
        ),  # case and _ as events write them
        ("ja-JP", "Counterfeit goods are not allowed.", "en", True),  # then the default
        ("en-GB", "Counterfeit goods are not allowed.", "en", False),  # the default is in its language
    ],
)
def test_a_category_verdict_speaks_the_items_language(
    tmp_path: Path, locale: str, message: str, used: str, fallback: bool
) -> None:
    policy = _pack(tmp_path)
    verdict = decided_verdict(policy, {"counterfeit": 0.95}, now=datetime.now(UTC), locale=locale)
    assert (verdict.decision, verdict.reason_code) == ("reject", "COUNTERFEIT")
    assert (verdict.seller_message, verdict.seller_message_locale, verdict.seller_message_fallback) == (
        message,
        used,
        fallback,
    )


async def test_a_rules_message_and_its_categorys_are_translated(tmp_path: Path) -> None:
    policy = _pack(tmp_path)
    blocked = await _verdict(policy, NoModel(), title="Replica watch", locale="de-DE")
    assert (blocked.decided_by.id, blocked.seller_message, blocked.seller_message_locale) == (
        "blocked",
        "Dieses Angebot verwendet gesperrte Begriffe.",
        "de",
    )
    # off-platform has no message of its own: its category's, with the category's translations
    contact = await _verdict(policy, NoModel(), description="Call me on WhatsApp", locale="pt-BR")
    assert (contact.decided_by.id, contact.seller_message, contact.seller_message_locale) == (
        "off-platform",
        "Spam não é permitido.",
        "pt",
    )
    untranslated = await _verdict(policy, NoModel(), title="Replica watch", locale="ja-JP")
    assert untranslated.seller_message == "This listing uses blocked terms."
    assert (untranslated.seller_message_locale, untranslated.seller_message_fallback) == ("en", True)


async def test_the_fail_closed_message_is_translated_for_the_shipped_languages(tmp_path: Path) -> None:
    policy = _pack(tmp_path)
    failed = await _verdict(policy, NoModel(InferenceTimeout("slow")), locale="pl-PL")
    assert (failed.decision, failed.reason_code) == ("review", "INFERENCE_ERROR")
    assert (failed.seller_message, failed.seller_message_locale) == (
        "Twoja treść czeka na ręczną weryfikację.",
        "pl",
    )
    rule_error = decided_verdict(
        policy, {}, now=datetime.now(UTC), outcome=decide_on_rule_error("r"), locale="fr-CA"
    )
    assert rule_error.seller_message == "Votre contenu est en attente d'une vérification manuelle."
    error = decided_verdict(
        policy, {}, now=datetime.now(UTC), outcome=decide_on_error("timeout"), locale="ja-JP"
    )
    assert (error.seller_message_locale, error.seller_message_fallback) == ("en", True)


def test_an_approval_has_no_message_and_no_locale(tmp_path: Path) -> None:
    verdict = decided_verdict(_pack(tmp_path), {"spam": 0.1}, now=datetime.now(UTC), locale="de-DE")
    assert (verdict.seller_message, verdict.seller_message_locale, verdict.seller_message_fallback) == (
        "",
        None,
        False,
    )


def test_a_verdict_written_before_the_locale_fields_still_reads(tmp_path: Path) -> None:
    verdict = decided_verdict(_pack(tmp_path), {"spam": 0.95}, now=datetime.now(UTC))
    old = verdict.model_dump(mode="json", exclude={"seller_message_locale", "seller_message_fallback"})
    read = Verdict.model_validate(old)
    assert (read.seller_message_locale, read.seller_message_fallback) == (None, False)


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("pt-br", "pt-BR"),
        ("PT_BR", "pt-BR"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
        ("DE", "de"),
    ],
)
def test_locale_keys_are_normalised(given: str, normalised: str) -> None:
    assert normalise_locale(given) == normalised


def test_a_longer_locale_falls_back_through_its_prefixes() -> None:
    text = LocalizedText("Hello.", "en", (("zh", "你好。"), ("zh-Hant", "妳好。")))
    assert text.choose("zh-Hant-TW").locale == "zh-Hant"
    assert text.choose("zh-CN").locale == "zh"


def test_the_pack_keeps_normalised_keys(tmp_path: Path) -> None:
    [counterfeit, _] = _pack(tmp_path).categories
    assert [locale for locale, _ in counterfeit.seller_messages] == ["de", "pt", "pt-BR"]


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            "      pt-br: Produtos",
            "      PT-BR: Duplicado.\n      pt-br: Produtos",
            r"localized\.yaml:11: categories\.0\.seller_messages: .*\['pt-BR'\] are given more than once",
        ),
        (
            "      de: Gefälschte",
            "      deutsch: Gefälschte",
            r"localized\.yaml:11: categories\.0\.seller_messages\.deutsch\.\[key\]: String should match",
        ),
        (
            "      de: Gefälschte",
            "      en: Fakes are not allowed.\n      de: Gefälschte",
            r"category counterfeit: seller_messages\.en repeats the pack's message_locale",
        ),
        (
            "    seller_message: This listing uses blocked terms.\n",
            "",
            r"rule blocked: seller_messages translate its seller_message, which it does not have",
        ),
    ],
)
def test_bad_translations_are_named(tmp_path: Path, old: str, new: str, problem: str) -> None:
    assert old in PACK
    with pytest.raises(ConfigError, match=problem):
        _pack(tmp_path, PACK.replace(old, new, 1))


def test_the_default_texts_locale_is_the_packs(tmp_path: Path) -> None:
    # A pack written in German, translated into English.
    text = (
        PACK.replace("preamble:", "message_locale: de-de\npreamble:")
        .replace(
            "seller_message: Counterfeit goods are not allowed.", "seller_message: Fälschungen sind verboten."
        )
        .replace("      de: Gefälschte Waren sind nicht erlaubt.", "      en: Counterfeits are not allowed.")
    )
    policy = _pack(tmp_path, text)
    assert policy.message_locale == "de-DE"
    message = decide(policy, {"counterfeit": 0.95}).localized
    assert message.choose("de-AT") == SellerMessage("Fälschungen sind verboten.", "de-DE")
    assert message.choose("en-US") == SellerMessage("Counterfeits are not allowed.", "en")
    assert message.choose("ja-JP") == SellerMessage("Fälschungen sind verboten.", "de-DE", fallback=True)


def test_translations_are_part_of_the_version(tmp_path: Path) -> None:
    before = _pack(tmp_path).version
    assert _pack(tmp_path, PACK.replace("Spam ist nicht erlaubt.", "Kein Spam.")).version != before
    # The default locale written out keeps the version of a pack that leaves it unset.
    assert _pack(tmp_path, PACK.replace("preamble:", "message_locale: en\npreamble:")).version == before


def test_policy_check_warns_about_missing_translations(tmp_path: Path) -> None:
    complete = tmp_path / "complete.yaml"
    complete.write_text(PACK)
    ok = CliRunner().invoke(cli, ["policy", "check", str(complete)])
    assert ok.exit_code == 0, ok.output
    assert "warning" not in ok.output  # pt-BR readers of the other messages get their pt text
    partial = tmp_path / "partial.yaml"
    partial.write_text(PACK.replace("{de: Spam ist nicht erlaubt., pt:", "{pt:"))
    result = CliRunner().invoke(cli, ["policy", "check", str(partial)])
    assert result.exit_code == 0, result.output  # a warning, not an error
    assert "    warning: category spam has no seller message in de (readers there get the en text)\n" in (
        result.output
    )
    assert result.output.count("warning") == 1


def test_policy_check_names_locales_the_built_in_message_lacks(tmp_path: Path) -> None:
    pack = tmp_path / "japanese.yaml"
    pack.write_text(
        PACK.replace("      de: Gefälschte", "      ja: 偽造品は禁止です。\n      de: Gefälschte")
    )
    output = CliRunner().invoke(cli, ["policy", "check", str(pack)]).output
    assert "warning: category spam has no seller message in ja" in output
    assert "warning: rule blocked has no seller message in ja" in output
    assert (
        "warning: the built-in error message has no seller message in ja (readers there get the en text)"
        in (output)
    )
