"""The items' vectors: which items have a current one, and how many a model has."""

from __future__ import annotations

from collections.abc import Sequence

from django.db.models import Count, Exists, Max, OuterRef, QuerySet

from catalog.models import GalleryImage, Product
from search.items import GALLERY_IMAGE, KINDS, PRODUCT, ItemRef
from search.models import Embedding
from search.selectors.embedding_models import active_model_key


def _current_vectors(model: str, field: str) -> QuerySet[Embedding]:
    """Vectors of ``model`` computed from the item's current image."""
    return Embedding.objects.filter(**{field: OuterRef("pk")}, model=model, sha256=OuterRef("sha256"))


def products_with_embedded_flag(queryset: QuerySet[Product], *, model: str | None = None) -> QuerySet[Product]:
    return queryset.annotate(embedded=Exists(_current_vectors(model or active_model_key(), PRODUCT.name)))


def gallery_with_embedded_flag(queryset: QuerySet[GalleryImage], *, model: str | None = None) -> QuerySet[GalleryImage]:
    return queryset.annotate(embedded=Exists(_current_vectors(model or active_model_key(), GALLERY_IMAGE.name)))


def items_by_ref(refs: Sequence[ItemRef], *, model: str | None = None) -> dict[ItemRef, object]:
    """The products and gallery images named, with their ``embedded`` flag (missing ones left out)."""
    key = model or active_model_key()
    found: dict[ItemRef, object] = {}
    for kind in KINDS.values():
        ids = [ref.id for ref in refs if ref.kind == kind.name]
        if ids:
            queryset = kind.model.objects.filter(pk__in=ids).annotate(embedded=Exists(_current_vectors(key, kind.name)))
            found.update({ItemRef(kind.name, item.pk): item for item in queryset})
    return found


def embedding_count(*, model: str) -> int:
    return Embedding.objects.filter(model=model).count()


def embedding_counts() -> dict[str, int]:
    """Vectors per model."""
    return dict(Embedding.objects.values_list("model").annotate(count=Count("id")).values_list("model", "count"))


def embedding_stamp(*, model: str) -> dict[str, int | None]:
    """How many vectors a model has and its newest one's id: what a cached answer saw."""
    return Embedding.objects.filter(model=model).aggregate(count=Count("id"), last=Max("id"))
