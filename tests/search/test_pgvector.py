from __future__ import annotations

import numpy as np
import pytest
from django.db import connection

from catalog.models import GalleryImage
from search.models import DEFAULT_MODEL_DIM, DEFAULT_MODEL_KEY, Embedding

pytestmark = pytest.mark.django_db


def test_vector_extension_is_installed():
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        (version,) = cursor.fetchone()
    major, minor = (int(part) for part in version.split(".")[:2])
    assert (major, minor) >= (0, 8)


def test_hnsw_index_serves_cosine_order_by_limit():
    rng = np.random.default_rng(0)
    images = GalleryImage.objects.bulk_create(
        GalleryImage(file=f"x/{i}.png", original_filename=f"{i}.png", sha256=f"{i:064d}", width=1, height=1)
        for i in range(1000)
    )
    vectors = rng.standard_normal((1000, DEFAULT_MODEL_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    Embedding.objects.bulk_create(
        Embedding(gallery_image=image, model=DEFAULT_MODEL_KEY, vector=vector, sha256=image.sha256)
        for image, vector in zip(images, vectors, strict=True)
    )
    query = "[" + ",".join(f"{x:.6f}" for x in vectors[42]) + "]"
    sql = (
        f"SELECT gallery_image_id FROM search_embedding WHERE model = %s "
        f"ORDER BY vector::halfvec({DEFAULT_MODEL_DIM}) <=> %s::halfvec({DEFAULT_MODEL_DIM}) LIMIT 5"
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE search_embedding")
        cursor.execute("SET LOCAL enable_sort = off")  # as the selector runs it past a few hundred rows
        cursor.execute("EXPLAIN " + sql, [DEFAULT_MODEL_KEY, query])
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute(sql, [DEFAULT_MODEL_KEY, query])
        nearest = [row[0] for row in cursor.fetchall()]
    assert "embedding_efficientnet_lite0_hnsw" in plan
    assert nearest[0] == images[42].pk
