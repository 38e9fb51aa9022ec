"""Reads for the search engine: the active model, coverage, and the nearest-neighbour query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, QuerySet

from catalog.models import GalleryImage, Product
from search.models import ActiveModel, Collection, Embedding
from search.registry import MODELS, model_spec


def active_model_key() -> str:
    row = ActiveModel.objects.filter(pk=1).values_list("key", flat=True).first()
    return row or settings.EMBEDDING_DEFAULT_MODEL


def _current_vectors(model: str, field: str) -> QuerySet[Embedding]:
    """Vectors of ``model`` computed from the item's current image."""
    return Embedding.objects.filter(**{field: OuterRef("pk")}, model=model, sha256=OuterRef("sha256"))


def products_with_embedded_flag(queryset: QuerySet[Product], *, model: str | None = None) -> QuerySet[Product]:
    return queryset.annotate(embedded=Exists(_current_vectors(model or active_model_key(), "product")))


def gallery_with_embedded_flag(queryset: QuerySet[GalleryImage], *, model: str | None = None) -> QuerySet[GalleryImage]:
    return queryset.annotate(embedded=Exists(_current_vectors(model or active_model_key(), "gallery_image")))


def model_coverage(*, model: str) -> list[dict[str, object]]:
    """Per collection: items, items with a current vector of ``model``, and the difference."""
    rows = []
    for collection, model_class, field in (
        ("products", Product, "product"),
        ("gallery", GalleryImage, "gallery_image"),
    ):
        items = model_class.objects.count()
        embedded = Embedding.objects.filter(model=model, **{f"{field}__sha256": F("sha256")}).count()
        rows.append(
            {
                "collection": collection,
                "model": model,
                "items": items,
                "embedded": embedded,
                "missing": items - embedded,
            }
        )
    return rows


def embedding_model_list() -> list[dict[str, object]]:
    active = active_model_key()
    result = []
    for spec in MODELS.values():
        coverage = model_coverage(model=spec.key)
        result.append(
            {
                "key": spec.key,
                "dim": spec.dim,
                "active": spec.key == active,
                "description": spec.description,
                "weights": spec.weights,
                "embedded": sum(int(row["embedded"]) for row in coverage),
                "missing": sum(int(row["missing"]) for row in coverage),
            }
        )
    return result


@dataclass(frozen=True)
class Match:
    type: str  # "product" | "gallery_image"
    id: int
    similarity: float


def _vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


def items_similar_to(
    *,
    vector: np.ndarray,
    model: str,
    collection: str = Collection.ALL,
    k: int = 6,
    threshold: float | None = None,
    categories: Sequence[str] = (),
    min_price: Decimal | None = None,
    max_price: Decimal | None = None,
    exclude: tuple[str, int] | None = None,
    exact: bool = False,
) -> list[Match]:
    """The ``k`` items nearest to ``vector`` under ``model``, most similar first.

    One SQL statement ordered by cosine distance on the model's partial HNSW index, or an
    exact scan when ``exact`` is set or the model has few vectors. Product filters restrict
    the search to products; pgvector's iterative scan keeps filtered queries returning k rows.
    """
    spec = model_spec(model)
    dim = spec.dim
    filtered = bool(categories) or min_price is not None or max_price is not None
    if filtered and collection == Collection.GALLERY:
        return []
    where = ["e.model = %s"]
    params: list[object] = [spec.key]
    if filtered or collection == Collection.PRODUCTS:
        where.append("e.product_id IS NOT NULL")
    elif collection == Collection.GALLERY:
        where.append("e.gallery_image_id IS NOT NULL")
    join = ""
    if filtered:
        join = "JOIN catalog_product p ON p.id = e.product_id"
        if categories:
            where.append("p.category = ANY(%s)")
            params.append(list(categories))
        if min_price is not None:
            where.append("p.price >= %s")
            params.append(min_price)
        if max_price is not None:
            where.append("p.price <= %s")
            params.append(max_price)
    if exclude is not None:
        column = "e.product_id" if exclude[0] == "product" else "e.gallery_image_id"
        where.append(f"{column} IS DISTINCT FROM %s")
        params.append(exclude[1])
    distance = f"e.vector::vector({dim}) <=> %s::vector({dim})"
    # "+ 0" hides the distance from the index: the planner must scan exactly.
    order = f"({distance}) + 0" if exact else distance
    # Only fixed SQL fragments are interpolated; every value is a bound parameter.
    conditions = " AND ".join(where)
    select = f"SELECT e.product_id, e.gallery_image_id, 1 - ({distance}) AS similarity FROM search_embedding e"  # noqa: S608
    sql = f"{select} {join} WHERE {conditions} ORDER BY {order} LIMIT %s"  # noqa: S608
    literal = _vector_literal(vector)
    with transaction.atomic(), connection.cursor() as cursor:
        if not exact:
            cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(max(40, min(1000, 2 * k)))])
            if filtered or exclude is not None or collection != Collection.ALL:
                cursor.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        cursor.execute(sql, [literal, *params, literal, k])
        rows = cursor.fetchall()
    matches = [
        Match("product" if product_id else "gallery_image", product_id or gallery_id, round(float(similarity), 4))
        for product_id, gallery_id, similarity in rows
    ]
    # relaxed_order may return near-ties slightly out of order; the contract is sorted.
    matches.sort(key=lambda match: match.similarity, reverse=True)
    if threshold is not None:
        matches = [match for match in matches if match.similarity >= threshold]
    return matches
