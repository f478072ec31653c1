"""``content.listings.v1``: a new or edited marketplace listing."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl, StringConstraints

from streamproc.schemas.common import ContentId, InboundModel, Locale

__all__ = ["ListingEvent", "Price"]


class Price(BaseModel):
    """An amount in a currency (ISO 4217 code)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=4)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class ListingEvent(InboundModel):
    """A listing as the marketplace publishes it, keyed by ``listing_id``."""

    schema_version: Literal[1] = 1
    listing_id: ContentId
    revision: Annotated[int, Field(ge=0, description="Increases with every edit of the listing.")]
    seller_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    title: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    description: Annotated[str, StringConstraints(max_length=20_000)] = ""
    category_path: Annotated[
        list[Annotated[str, StringConstraints(max_length=200)]], Field(max_length=10)
    ] = Field(default_factory=list, description='From the root down, e.g. ["Fashion", "Bags"].')
    price: Price
    image_urls: Annotated[list[HttpUrl], Field(max_length=50)] = Field(default_factory=list)
    attributes: Annotated[
        dict[
            Annotated[str, StringConstraints(max_length=200)],
            Annotated[str, StringConstraints(max_length=2_000)],
        ],
        Field(max_length=100),
    ] = Field(default_factory=dict, description="Free-form item attributes, e.g. brand, size.")
    locale: Locale = "en-US"
    audience: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="Expected reach (followers, impressions); ranks the item in the review queue.",
    )
    created_at: AwareDatetime

    # What every content event says the same way, so callers never ask which one it is.
    # Properties, not fields: the wire format stays as publishers write it.
    @property
    def content_type(self) -> Literal["listing"]:
        return "listing"

    @property
    def content_id(self) -> str:
        """``listing_id``."""
        return self.listing_id

    @property
    def owner_id(self) -> str:
        """``seller_id``."""
        return self.seller_id
