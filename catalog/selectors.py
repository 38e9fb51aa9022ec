"""Reads from the catalog."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Count, QuerySet

from catalog.models import GalleryImage, Product
from search.selectors import gallery_with_embedded_flag, products_with_embedded_flag


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
    return products_with_embedded_flag(queryset)


def product_get(*, pk: int) -> Product:
    return products_with_embedded_flag(Product.objects.all()).get(pk=pk)


def category_list() -> list[dict[str, object]]:
    return list(Product.objects.values("category").annotate(count=Count("id")).order_by("category"))


def gallery_image_list() -> QuerySet[GalleryImage]:
    return gallery_with_embedded_flag(GalleryImage.objects.all())


def gallery_image_get(*, pk: int) -> GalleryImage:
    return gallery_with_embedded_flag(GalleryImage.objects.all()).get(pk=pk)
