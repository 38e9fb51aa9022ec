"""Reads about embeddings: which model is active, which items have vectors."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Exists, OuterRef, QuerySet

from catalog.models import GalleryImage, Product
from search.models import Embedding


def active_model_key() -> str:
    return settings.EMBEDDING_DEFAULT_MODEL


def products_with_embedded_flag(queryset: QuerySet[Product], *, model: str | None = None) -> QuerySet[Product]:
    vectors = Embedding.objects.filter(product=OuterRef("pk"), model=model or active_model_key())
    return queryset.annotate(embedded=Exists(vectors))


def gallery_with_embedded_flag(queryset: QuerySet[GalleryImage], *, model: str | None = None) -> QuerySet[GalleryImage]:
    vectors = Embedding.objects.filter(gallery_image=OuterRef("pk"), model=model or active_model_key())
    return queryset.annotate(embedded=Exists(vectors))
