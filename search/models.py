from __future__ import annotations

from django.db import models
from pgvector.django import VectorField

# The offline default model, whose HNSW index the migrations create.
DEFAULT_MODEL_KEY = "efficientnet_lite0"
DEFAULT_MODEL_DIM = 1280


def hnsw_index_name(model_key: str) -> str:
    return f"embedding_{model_key}_hnsw"[:63]


def hnsw_index_sql(model_key: str, dim: int, *, concurrently: bool = False) -> str:
    """SQL for one model's partial HNSW cosine index over the column cast to its dimension.

    Raw SQL because Django cannot yet render an operator class after a cast expression.
    ``model_key`` comes from the model registry (identifier characters only).
    """
    if not model_key.replace("_", "").isalnum():
        raise ValueError(f"invalid model key {model_key!r}")
    return (
        f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}IF NOT EXISTS {hnsw_index_name(model_key)} "
        f"ON search_embedding USING hnsw ((vector::vector({int(dim)})) vector_cosine_ops) "
        f"WITH (m = 16, ef_construction = 64) WHERE model = '{model_key}'"
    )


class Embedding(models.Model):
    """One item's vector under one embedding model.

    The column has no fixed dimension so that models of different sizes share the table;
    each model gets a partial HNSW index on the column cast to its dimension
    (``hnsw_index_sql``), so a query filtered on ``model`` and ordered by the cast distance
    uses that model's index only.
    """

    product = models.ForeignKey("catalog.Product", null=True, blank=True, on_delete=models.CASCADE)
    gallery_image = models.ForeignKey("catalog.GalleryImage", null=True, blank=True, on_delete=models.CASCADE)
    model = models.CharField(max_length=64)
    vector = VectorField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(product__isnull=False, gallery_image__isnull=True)
                    | models.Q(product__isnull=True, gallery_image__isnull=False)
                ),
                name="embedding_exactly_one_item",
            ),
            models.UniqueConstraint(
                fields=["product", "model"], condition=models.Q(product__isnull=False), name="embedding_product_model"
            ),
            models.UniqueConstraint(
                fields=["gallery_image", "model"],
                condition=models.Q(gallery_image__isnull=False),
                name="embedding_gallery_model",
            ),
        ]
        indexes = [
            models.Index(fields=["model"], name="embedding_model"),
        ]

    def __str__(self) -> str:
        item = f"product {self.product_id}" if self.product_id else f"gallery image {self.gallery_image_id}"
        return f"{self.model} vector of {item}"
