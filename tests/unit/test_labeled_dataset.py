"""datasets/moderation-v1: the labeled calibration and test split keeps the properties its
datasheet promises (size, balance, per-category positives on both sides, hard negatives,
obfuscation, languages, injection attempts, long transcripts, unique wording)."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from pathlib import Path

import pytest

from streamproc.evaluation.dataset import LabeledItem, check_categories, load_dataset
from streamproc.policy import Policy, load_pack
from streamproc.schemas import ListingEvent, VideoEvent

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "datasets" / "moderation-v1"
CALIBRATION = DATASET / "calibration.jsonl"
TEST = DATASET / "test.jsonl"
PACKS = {"listing": ROOT / "policies" / "listings.yaml", "video": ROOT / "policies" / "videos.yaml"}

# Clean items that mention any of these are hard negatives: words a keyword filter or a
# careless model would flag (weapons, drugs, medicine, brands, nudity, war, pests, alcohol).
HARD_NEGATIVE = re.compile(
    r"\b(knife|knives|blade|chef|shots?\b|shotgun|gun\b|guns\b|rifle|pistol|bullet|cartridge|trigger"
    r"|syringe|needles?\b|insulin|pills?\b|blood pressure|vaccin|espresso|rolex|louis vuitton|gucci"
    r"|chanel|receipt|wine|beer|brew|nudes?\b|naked|nazi|reich|wwii|war\b|weed|snow|plug|coca-cola"
    r"|crack|pot\b|bombs?\b|ivory|escort|adult|replica|kill|pest|rats?\b|mice|wasp|poison|fire\b"
    r"|torch|choking|pass out|skeleton|axe|boning"
    r"|cuchill|messer|couteau|faca\b|coltell|nóż|noże|vino|wein\b|vin\b|vinho|bier|cervej|cervez"
    r"|tensiómetro|impf|vacina|nus?\b|krieg|guerra|guerre|schädling|ratten|veneno|pragas"
    r"|disinfestazione|atragant|afilar|zweiten weltkrieg)",
    re.IGNORECASE,
)
# Ways violating items hide from keyword filters.
OBFUSCATION = {
    "leetspeak": re.compile(r"\b\w*[a-z][0-4@$][a-z]\w*\b|\b0[a-z]{3,}", re.IGNORECASE),
    "spaced letters": re.compile(r"\b(?:\w[ .-]){3,}\w\b"),
    # Emoji that stand in for the thing: snow, leaf, plug, pill, candy, peach, aubergine, cherry.
    "emoji": re.compile("[❄🍃🌿🔌💊🍫🍬🍑🍆🍒]"),
    "coded slang": re.compile(
        r"\b(snow|plug|420|zaza|bars|nieve|schnee|beuh|erba|fumo|reps?|UA|1488|14 words)\b", re.IGNORECASE
    ),
}
INJECTION = re.compile(
    r"ignor\w*\s+(all\s+|any\s+|the\s+)?(previous|prior|alle\s+vorherigen)?\s*(instructions|rules|anweisungen)"
    r"|ignore the instructions|ignora las instrucciones|<\|im_start\|>|\[INST\]|\bSYSTEM:",
    re.IGNORECASE,
)
CURRENCY = {"en-US": "USD", "pt-BR": "BRL", "pl-PL": "PLN"}
EURO_LOCALES = {"es-ES", "de-DE", "fr-FR", "it-IT"}
LONG_TRANSCRIPT = 1200


def _text(item: LabeledItem) -> str:
    event = item.event
    if isinstance(event, ListingEvent):
        return "\n".join([event.title, event.description, *event.attributes.values()])
    assert isinstance(event, VideoEvent)
    return "\n".join([event.caption, event.transcript, event.ocr_text])


@pytest.fixture(scope="module")
def packs() -> dict[str, Policy]:
    return {content_type: load_pack(path) for content_type, path in PACKS.items()}


@pytest.fixture(scope="module")
def splits() -> dict[str, list[LabeledItem]]:
    return {"calibration": load_dataset(CALIBRATION), "test": load_dataset(TEST)}


@pytest.fixture(scope="module")
def items(splits: dict[str, list[LabeledItem]]) -> list[LabeledItem]:
    return splits["calibration"] + splits["test"]


def test_size_and_content_types(splits: dict[str, list[LabeledItem]], items: list[LabeledItem]) -> None:
    types = Counter(item.content_type for item in items)
    assert len(items) >= 320, f"{len(items)} items; the datasheet promises at least 320"
    assert types["video"] >= 110 and types["listing"] >= 110, types
    share = len(splits["calibration"]) / len(items)
    assert 0.35 <= share <= 0.45, f"calibration holds {share:.0%} of the items, not about 40 %"


def test_split_is_disjoint_and_new(splits: dict[str, list[LabeledItem]]) -> None:
    calibration = {(i.content_type, i.event.content_id) for i in splits["calibration"]}
    test = {(i.content_type, i.event.content_id) for i in splits["test"]}
    assert not calibration & test, f"in both splits: {sorted(calibration & test)[:5]}"
    samples = {(i.content_type, i.event.content_id) for i in load_dataset(ROOT / "samples" / "labeled.jsonl")}
    assert not (calibration | test) & samples, "content ids collide with samples/labeled.jsonl"


def test_categories_belong_to_the_packs(
    splits: dict[str, list[LabeledItem]], packs: dict[str, Policy]
) -> None:
    for name, split in splits.items():
        for content_type, pack in packs.items():
            typed = [item for item in split if item.content_type == content_type]
            check_categories(DATASET / f"{name}.jsonl", typed, [pack])


def test_every_category_has_positives_on_both_sides(
    splits: dict[str, list[LabeledItem]], packs: dict[str, Policy]
) -> None:
    categories = {c for pack in packs.values() for c in pack.category_ids}
    counts = {name: Counter(c for i in split for c in i.true_categories) for name, split in splits.items()}
    for category in sorted(categories):
        cal, test = counts["calibration"][category], counts["test"][category]
        assert cal >= 8 and test >= 12 and cal + test >= 22, (
            f"{category}: {cal} positives in calibration, {test} in test"
        )


def test_clean_share(splits: dict[str, list[LabeledItem]], items: list[LabeledItem]) -> None:
    share = sum(not i.true_categories for i in items) / len(items)
    assert 0.45 <= share <= 0.55, f"{share:.0%} of the items are clean"
    for name, split in splits.items():
        split_share = sum(not i.true_categories for i in split) / len(split)
        assert 0.4 <= split_share <= 0.6, f"{name}: {split_share:.0%} clean"


def test_hard_negatives(items: list[LabeledItem]) -> None:
    hard = [i for i in items if not i.true_categories and HARD_NEGATIVE.search(_text(i))]
    assert len(hard) >= 60, f"{len(hard)} clean items with trigger words; at least 60 expected"


def test_positives_use_obfuscation(items: list[LabeledItem]) -> None:
    positives = [_text(i) for i in items if i.true_categories]
    hits = {kind: sum(bool(p.search(t)) for t in positives) for kind, p in OBFUSCATION.items()}
    assert all(n >= 3 for n in hits.values()), hits
    assert sum(any(p.search(t) for p in OBFUSCATION.values()) for t in positives) >= 20, hits


def test_languages(items: list[LabeledItem]) -> None:
    by_locale: dict[str, list[LabeledItem]] = {}
    for item in items:
        by_locale.setdefault(item.event.locale, []).append(item)
    large = [loc for loc, xs in by_locale.items() if not loc.startswith("en") and len(xs) >= 15]
    assert len(large) >= 4, {loc: len(xs) for loc, xs in by_locale.items()}
    for loc in large:
        clean = sum(not i.true_categories for i in by_locale[loc])
        assert 0 < clean < len(by_locale[loc]), f"{loc}: needs both clean and violating items"


def test_prompt_injection_attempts(items: list[LabeledItem]) -> None:
    attempts = [i for i in items if INJECTION.search(_text(i))]
    assert len(attempts) >= 12, f"{len(attempts)} items with injection attempts"
    clean = sum(not i.true_categories for i in attempts)
    assert 0 < clean < len(attempts), "injections must appear in clean and violating items"


def test_long_transcripts(items: list[LabeledItem]) -> None:
    long = [
        i for i in items if isinstance(i.event, VideoEvent) and len(i.event.transcript) >= LONG_TRANSCRIPT
    ]
    assert len(long) >= 15, f"{len(long)} videos with a transcript of {LONG_TRANSCRIPT}+ characters"
    assert any(i.true_categories for i in long) and any(not i.true_categories for i in long)


def test_owners_are_not_banned(items: list[LabeledItem], packs: dict[str, Policy]) -> None:
    banned = {
        owner
        for pack in packs.values()
        for name, values in pack.lists
        if name.startswith("banned_")
        for owner in values
    }
    assert banned, "the packs no longer name banned owners; update this test"
    assert not {i.event.owner_id for i in items} & banned


def test_prices_are_plausible(items: list[LabeledItem]) -> None:
    for item in items:
        event = item.event
        if not isinstance(event, ListingEvent):
            continue
        expected = "EUR" if event.locale in EURO_LOCALES else CURRENCY.get(event.locale)
        assert event.price.currency == expected, f"{item.id}: {event.price.currency} for {event.locale}"
        assert event.price.amount <= 20_000, f"{item.id}: {event.price.amount}"


def test_wording_is_unique(items: list[LabeledItem]) -> None:
    """No two items share a headline or differ only in a word or two (e.g. the brand)."""
    heads = Counter((i.event.title if isinstance(i.event, ListingEvent) else i.event.caption) for i in items)
    assert not [h for h, n in heads.items() if n > 1]
    words = [(i.id, frozenset(re.findall(r"\w+", _text(i).lower()))) for i in items]
    for (a, wa), (b, wb) in itertools.combinations(words, 2):
        overlap = len(wa & wb) / len(wa | wb)
        assert overlap < 0.8, f"{a} and {b} share {overlap:.0%} of their words"
