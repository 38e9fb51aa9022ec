"""A large library's duplicates are found in the background by a real Celery worker, a chunk
of vectors per task; requests serve the newest finished scan and never time out."""

from __future__ import annotations

import numpy as np
import pytest

from catalog.models import GalleryImage
from search.models import DuplicateScan, Embedding
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)  # the worker sees committed rows only

MODEL = "efficientnet_lite0"


def _add(vectors: np.ndarray, start: int) -> None:
    rows = GalleryImage.objects.bulk_create(
        GalleryImage(file=f"images/x/{i}.png", original_filename=f"{i}.png", sha256=f"{i:064d}", width=8, height=8)
        for i in range(start, start + len(vectors))
    )
    Embedding.objects.bulk_create(
        Embedding(gallery_image=row, model=MODEL, vector=vector, sha256=row.sha256)
        for row, vector in zip(rows, vectors, strict=True)
    )


@pytest.fixture
def library() -> np.ndarray:
    """30 vectors: three near-copies of the first, two of the second, the rest apart."""
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((30, 1280))
    vectors[1:3] = vectors[0] + 0.01 * rng.standard_normal((2, 1280))
    vectors[4] = vectors[3] + 0.01 * rng.standard_normal(1280)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    _add(vectors, 0)
    return vectors


def _sizes(client) -> list[int]:
    response = client.get("/api/v1/duplicates/?collection=gallery&threshold=0.95")
    assert response.status_code == 200, response.json()
    return sorted(group["size"] for group in response.json()["results"])


def test_duplicates_of_a_large_library_come_from_a_background_scan(staff_client, library, settings, workers):
    on_request = _sizes(staff_client)
    assert on_request == [2, 3]
    settings.DUPLICATES_SYNC_MAX_VECTORS = 10  # "large" from here on
    first = staff_client.get("/api/v1/duplicates/?collection=gallery&threshold=0.95")
    assert first.status_code == 503 and first.json()["error"]["code"] == "duplicates_scanning"
    scan = DuplicateScan.objects.get()
    assert (scan.state, scan.vectors_count) == ("queued", 30)

    workers.env["DUPLICATES_SCAN_CHUNK"] = "7"  # five chunks, five tasks
    workers.start()
    wait_for(lambda: DuplicateScan.objects.get(pk=scan.pk).state == "succeeded", timeout=120)
    scan.refresh_from_db()
    assert scan.done == 30 and scan.pairs.count() >= 4
    assert _sizes(staff_client) == on_request  # the same groups as found during a request

    # A new copy of the second vector: the finished scan is served while a new one runs.
    _add(library[3:4] + 0.001, 30)
    assert _sizes(staff_client) == [2, 3]
    newer = DuplicateScan.objects.exclude(pk=scan.pk).get()
    wait_for(lambda: DuplicateScan.objects.get(pk=newer.pk).state == "succeeded", timeout=120)
    assert _sizes(staff_client) == [3, 3]
    assert not DuplicateScan.objects.filter(pk=scan.pk).exists()  # superseded
    low = staff_client.get("/api/v1/duplicates/?collection=gallery&threshold=0.6")
    assert low.status_code == 400 and low.json()["error"]["code"] == "threshold_below_scan"


def test_a_stalled_scan_is_resumed_and_a_failed_one_not_retried_at_once(staff_client, library, settings):
    settings.DUPLICATES_SYNC_MAX_VECTORS = 10
    settings.DUPLICATES_SCAN_STALL_SECONDS = 5
    assert staff_client.get("/api/v1/duplicates/").status_code == 503
    stalled = DuplicateScan.objects.get()
    long_ago = stalled.progressed_at.replace(year=2000)
    DuplicateScan.objects.filter(pk=stalled.pk).update(progressed_at=long_ago, last_id=7, done=7)
    assert staff_client.get("/api/v1/duplicates/").status_code == 503
    stalled.refresh_from_db()
    # Resumed where it stopped (its chunk message sent again), not started over.
    assert (stalled.state, stalled.last_id) == ("queued", 7) and stalled.progressed_at > long_ago
    assert DuplicateScan.objects.count() == 1
    DuplicateScan.objects.filter(pk=stalled.pk).update(state="failed", finished_at=stalled.progressed_at)
    assert staff_client.get("/api/v1/duplicates/").status_code == 503
    assert DuplicateScan.objects.count() == 1  # a scan that just failed on these vectors waits


def test_the_review_page_says_the_scan_is_under_way(client, library, settings, staff_user):
    client.force_login(staff_user)
    settings.DUPLICATES_SYNC_MAX_VECTORS = 10
    response = client.get("/duplicates/")
    assert response.status_code == 503
    assert "are being found in the background (0% done)" in response.content.decode()
