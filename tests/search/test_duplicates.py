"""Duplicates are bounded work: thresholds on a grid, a statement timeout, capped groups."""

from __future__ import annotations

import numpy as np
import pytest

from catalog.models import GalleryImage
from search.models import Embedding

pytestmark = pytest.mark.django_db


def _library(count: int, *, copies_of_first: int = 0, seed: int = 0) -> None:
    """``count`` gallery images with random vectors; the first ``copies_of_first`` + 1 share one."""
    rng = np.random.default_rng(seed)
    rows = GalleryImage.objects.bulk_create(
        GalleryImage(file=f"images/x/{i}.png", original_filename=f"{i}.png", sha256=f"{i:064d}", width=8, height=8)
        for i in range(count)
    )
    vectors = rng.standard_normal((count, 1280)).astype(np.float32)
    vectors[1 : copies_of_first + 1] = vectors[0] + 0.01 * rng.standard_normal((copies_of_first, 1280))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    Embedding.objects.bulk_create(
        Embedding(gallery_image=row, model="efficientnet_lite0", vector=vector, sha256=row.sha256)
        for row, vector in zip(rows, vectors, strict=True)
    )


def test_large_groups_list_a_capped_number_of_items_with_their_size(staff_client, settings):
    settings.DUPLICATES_MAX_GROUP_ITEMS = 5
    settings.DUPLICATES_NEIGHBOURS = 20
    _library(30, copies_of_first=11)
    body = staff_client.get("/api/v1/duplicates/?collection=gallery&threshold=0.95").json()
    assert body["count"] == 1
    group = body["results"][0]
    assert group["size"] == 12 and len(group["items"]) == 5


def test_thresholds_snap_to_a_grid_and_share_the_cached_answer(staff_client, django_assert_max_num_queries):
    _library(10, copies_of_first=2)
    first = staff_client.get("/api/v1/duplicates/?collection=gallery&threshold=0.95").json()
    with django_assert_max_num_queries(5):  # the model lookup, the two cache stamps; not the k-NN join
        again = staff_client.get("/api/v1/duplicates/?collection=gallery&threshold=0.95049").json()
    assert again == first and first["count"] == 1


def test_a_slow_computation_answers_503_instead_of_holding_the_server(staff_client, settings):
    settings.DUPLICATES_STATEMENT_TIMEOUT_MS = 1
    _library(400)
    response = staff_client.get("/api/v1/duplicates/?collection=gallery&threshold=0.5")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "duplicates_timeout"
    settings.DUPLICATES_STATEMENT_TIMEOUT_MS = 20000
    assert staff_client.get("/api/v1/duplicates/?collection=gallery&threshold=0.5").status_code == 200
