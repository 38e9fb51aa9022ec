"""What the search engine indexes: the kinds of item, and a reference to one item.

The one place that knows how a product and a gallery image map to collections, access areas,
tables, vector columns and image fields; everything else goes through ``KINDS`` and ``ItemRef``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Model

from accounts.access import AREAS
from catalog.models import GalleryImage, Product


@dataclass(frozen=True)
class ItemKind:
    name: str  # "product" | "gallery_image": the API's `type` and the vector table's foreign key
    collection: str  # "products" | "gallery"
    area: str  # who may read it: an area of accounts.access.AREAS, "catalog" | "gallery"
    model: type[Model]
    file_field: str  # the model's image file field

    def __post_init__(self) -> None:
        if self.area not in AREAS:
            raise ValueError(f"{self.name}: {self.area!r} is no access area ({', '.join(AREAS)})")

    @property
    def column(self) -> str:
        """The ``search_embedding`` column that references this kind of item."""
        return f"{self.name}_id"

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    def file_of(self, item: Model) -> object:
        return getattr(item, self.file_field)


PRODUCT = ItemKind("product", "products", "catalog", Product, "image")
GALLERY_IMAGE = ItemKind("gallery_image", "gallery", "gallery", GalleryImage, "file")
KINDS: dict[str, ItemKind] = {kind.name: kind for kind in (PRODUCT, GALLERY_IMAGE)}
BY_COLLECTION: dict[str, ItemKind] = {kind.collection: kind for kind in KINDS.values()}


def kinds_of(collection: str) -> list[ItemKind]:
    """The kinds a collection name ("products", "gallery" or "all") covers."""
    return list(KINDS.values()) if collection == "all" else [BY_COLLECTION[collection]]


def areas_of(collection: str) -> set[str]:
    """The access areas a collection name covers (``accounts.access``: what a user must be
    able to read to search it); none for a name that is no collection."""
    if collection != "all" and collection not in BY_COLLECTION:
        return set()
    return {kind.area for kind in kinds_of(collection)}


@dataclass(frozen=True, order=True)
class ItemRef:
    kind: str
    id: int

    @property
    def item_kind(self) -> ItemKind:
        return KINDS[self.kind]

    @classmethod
    def of(cls, item: Model) -> ItemRef:
        kind = PRODUCT if isinstance(item, Product) else GALLERY_IMAGE
        return cls(kind.name, item.pk)

    @classmethod
    def from_columns(cls, product_id: int | None, gallery_image_id: int | None) -> ItemRef:
        """From a ``search_embedding`` row's two item columns (exactly one is set)."""
        return cls(PRODUCT.name, product_id) if product_id else cls(GALLERY_IMAGE.name, gallery_image_id)


def refs_by_kind(refs: Iterable[ItemRef]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {name: [] for name in KINDS}
    for ref in refs:
        grouped[ref.kind].append(ref.id)
    return grouped
