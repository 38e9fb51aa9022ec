"""Reads from the catalog."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import PurePath

from django.db.models import Count, QuerySet

from catalog.models import GalleryImage, Product, ProductImport
from simsite.sse import row_updates


def product_list(
    *,
    category: list[str] | None = None,
    min_price: Decimal | None = None,
    max_price: Decimal | None = None,
    q: str | None = None,
) -> QuerySet[Product]:
    queryset = Product.objects.all()
    if category:
        queryset = queryset.filter(category__in=category)
    if min_price is not None:
        queryset = queryset.filter(price__gte=min_price)
    if max_price is not None:
        queryset = queryset.filter(price__lte=max_price)
    if q:
        queryset = queryset.filter(name__icontains=q)
    return queryset


def product_get(*, pk: int) -> Product:
    return Product.objects.get(pk=pk)


def category_list() -> list[dict[str, object]]:
    return list(Product.objects.values("category").annotate(count=Count("id")).order_by("category"))


def gallery_image_list() -> QuerySet[GalleryImage]:
    return GalleryImage.objects.all()


def gallery_image_get(*, pk: int) -> GalleryImage:
    return GalleryImage.objects.get(pk=pk)


def product_import_get(*, pk: int) -> ProductImport:
    return ProductImport.objects.get(pk=pk)


def product_import_failures(*, product_import: ProductImport, limit: int | None = None) -> list[dict[str, object]]:
    rows = product_import.failures.order_by("row").values("row", "code", "error")
    return list(rows[:limit] if limit else rows)


def product_import_updates(pk: int) -> Iterator[ProductImport]:
    """The import each time its progress or state changes, until it ends."""
    return row_updates(
        lambda: ProductImport.objects.filter(pk=pk).first(),
        is_finished=lambda job: job.state in ProductImport.TERMINAL,
        signature=lambda job: (job.state, job.total, job.done),
    )


def products_by_id(*, ids: list[int]) -> QuerySet[Product]:
    return Product.objects.filter(pk__in=ids)


def gallery_images_by_id(*, ids: list[int]) -> QuerySet[GalleryImage]:
    return GalleryImage.objects.filter(pk__in=ids)


def gallery_image_named(*, filename: str) -> GalleryImage | None:
    """The newest gallery image uploaded under this file name (the earlier tools' address)."""
    return GalleryImage.objects.filter(original_filename=PurePath(filename).name).order_by("-pk").first()


def gallery_filenames() -> list[str]:
    """Distinct file names in upload order."""
    names = GalleryImage.objects.order_by("uploaded_at", "pk").values_list("original_filename", flat=True)
    return list(dict.fromkeys(names))


def product_import_list(*, limit: int = 20) -> QuerySet[ProductImport]:
    """The latest CSV imports, newest first."""
    return ProductImport.objects.order_by("-created_at", "-pk")[:limit]
