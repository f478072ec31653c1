"""The built-in policy used when no policy pack is configured.

The text is written for a general marketplace and a short-video platform. It comes first
and is identical across requests so that the model server's prefix cache reuses it.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from streamproc.policy.model import Category, Policy, Thresholds
from streamproc.schemas import ContentType

__all__ = ["DEFAULT_POLICIES", "default_policy"]

_STRICT = Thresholds(reject=0.85, review=0.5)
_LENIENT = Thresholds(reject=0.95, review=0.7)

_COMMON: Final = (
    Category(
        id="counterfeit",
        label="A",
        title="Counterfeit or intellectual-property infringement",
        description=(
            "Replicas, fakes, 'inspired by', '1:1', 'mirror quality' or 'AAA grade' copies of "
            "branded goods; unauthorised use of brand logos or trademarks; pirated software, "
            "media or activation keys; branded luxury goods priced far below any genuine price."
        ),
        reason_code="COUNTERFEIT",
        seller_message=("This content appears to offer counterfeit goods or infringe a brand's rights."),
        thresholds=_STRICT,
    ),
    Category(
        id="prohibited_items",
        label="B",
        title="Prohibited or regulated items",
        description=(
            "Firearms, ammunition, gun parts and conversion kits, explosives; illegal drugs, "
            "drug paraphernalia sold for drug use, prescription-only medicines; tobacco and "
            "vaping products to unverified buyers; live animals of protected species, ivory; "
            "stolen goods, identity documents, hacking tools, surveillance devices for spying."
        ),
        reason_code="PROHIBITED_ITEM",
        seller_message="This item cannot be sold or promoted on our platform.",
        thresholds=_STRICT,
    ),
    Category(
        id="adult",
        label="C",
        title="Adult sexual content",
        description=(
            "Sexually explicit text or imagery, nudity, sexual services, escort offers, "
            "adult products shown in use; any sexual content involving minors (always a "
            "violation)."
        ),
        reason_code="ADULT_CONTENT",
        seller_message="This content contains adult material that is not allowed.",
        thresholds=_STRICT,
    ),
    Category(
        id="hate_violence",
        label="D",
        title="Hate, harassment or violence",
        description=(
            "Slurs or dehumanising language about protected groups; extremist symbols, "
            "propaganda or memorabilia glorifying violence; threats, incitement, graphic "
            "violence, harassment of a person."
        ),
        reason_code="HATE_OR_VIOLENCE",
        seller_message="This content contains hateful or violent material that is not allowed.",
        thresholds=_STRICT,
    ),
    Category(
        id="misleading_claims",
        label="E",
        title="Misleading or deceptive claims",
        description=(
            "Health claims such as 'cures cancer', 'lose 10 kg in a week' or 'replaces "
            "medication'; fake certifications or reviews; guaranteed earnings; an item "
            "described as something it is not; bait pricing."
        ),
        reason_code="MISLEADING_CLAIM",
        seller_message="This content makes claims that appear misleading or unsupported.",
        thresholds=_LENIENT,
    ),
    Category(
        id="spam",
        label="F",
        title="Spam or off-platform solicitation",
        description=(
            "Keyword stuffing, repeated text, unrelated items, requests to pay or talk "
            "outside the platform (phone numbers, messaging handles, external payment links), "
            "referral codes, listings that sell nothing."
        ),
        reason_code="SPAM",
        seller_message="This content looks like spam or asks buyers to leave the platform.",
        thresholds=_LENIENT,
    ),
)

_DANGEROUS_ACTS: Final = Category(
    id="dangerous_acts",
    label="G",
    title="Dangerous acts and challenges",
    description=(
        "Stunts or challenges likely to cause serious injury (choking, fire, climbing "
        "buildings, vehicle surfing), self-harm or eating-disorder promotion, instructions "
        "for weapons or drugs, minors in dangerous situations."
    ),
    reason_code="DANGEROUS_ACT",
    seller_message="This video shows or encourages dangerous acts.",
    thresholds=_STRICT,
)

_LISTING_PREAMBLE = (
    "You are a trust-and-safety reviewer for an online marketplace. You read one product "
    "listing at a time and decide whether it violates the marketplace policy below. Most "
    "listings are ordinary goods and violate nothing."
)
_VIDEO_PREAMBLE = (
    "You are a trust-and-safety reviewer for a short-video shopping platform. You read the "
    "caption, speech transcript and on-screen text of one video at a time and decide "
    "whether it violates the community policy below. Most videos violate nothing."
)

DEFAULT_POLICIES: Final[MappingProxyType[ContentType, Policy]] = MappingProxyType(
    {
        "listing": Policy(
            name="default-listings",
            content_type="listing",
            preamble=_LISTING_PREAMBLE,
            categories=_COMMON,
        ),
        "video": Policy(
            name="default-videos",
            content_type="video",
            preamble=_VIDEO_PREAMBLE,
            categories=(*_COMMON, _DANGEROUS_ACTS),
        ),
    }
)


def default_policy(content_type: ContentType) -> Policy:
    return DEFAULT_POLICIES[content_type]
