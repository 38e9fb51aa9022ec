"""SEARCH_QUERY_EMBEDDER=worker: query images embedded on the embed queue, with a local fallback."""

from __future__ import annotations

import time

import numpy as np
import pytest

from search.querying import embed_locally, query_vectors
from tests import images

pytestmark = pytest.mark.django_db(transaction=True)


def test_query_embedded_on_a_worker_matches_local(settings, workers, caplog):
    settings.SEARCH_QUERY_EMBEDDER = "worker"
    settings.SEARCH_QUERY_TIMEOUT = 60
    workers.start()
    data = [images.jpeg_bytes(200, 150, seed=3), images.png_bytes(120, 120, seed=4)]
    remote = query_vectors(model="efficientnet_lite0", images=data)
    local = embed_locally(model="efficientnet_lite0", images=data)
    assert remote.shape == (2, 1280)
    assert np.allclose(remote, local, atol=1e-4)
    assert "embedding the query here" not in caplog.text


def test_falls_back_to_the_web_process_when_no_worker_answers(settings, caplog):
    from simsite.celery import app

    app.control.purge()
    settings.SEARCH_QUERY_EMBEDDER = "worker"
    settings.SEARCH_QUERY_TIMEOUT = 1
    started = time.monotonic()
    vectors = query_vectors(model="efficientnet_lite0", images=[images.jpeg_bytes(seed=5)])
    assert vectors.shape == (1, 1280) and time.monotonic() - started < 30
    assert "embedding the query here" in caplog.text
    app.control.purge()  # the unanswered request must not linger for later tests' workers


def test_queries_have_their_own_queue_and_an_abandoned_query_is_never_computed(settings, workers):
    from simsite.celery import app

    assert app.amqp.router.route({}, "search.tasks.embed_query")["queue"].name == "query"
    assert app.amqp.router.route({}, "search.tasks.embed_batch")["queue"].name == "embed"
    result = app.send_task("search.tasks.embed_query", args=["efficientnet_lite0", []], expires=1)
    time.sleep(2)  # nobody was listening: the asker has given up and embedded it itself
    workers.start()
    deadline = time.monotonic() + 60
    while result.state == "PENDING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert result.state == "REVOKED"  # expired: dropped by the worker, not computed


def test_a_query_is_decoded_once_and_gets_the_indexing_vector(settings):
    """Validation keeps the pixels at the scale the embedder decodes stored images at; the
    vector from them is the one the bytes give (so queries and the index stay comparable)."""
    from catalog.images import image_validate
    from search.embedders import get_embedder
    from search.querying import query_decode_side

    settings.SEARCH_QUERY_EMBEDDER = "web"
    for data in (images.jpeg_bytes(1024, 768, seed=11), images.exif_rotated_jpeg(), images.png_bytes(300, 200)):
        intake = image_validate(data=data, decode_min_side=query_decode_side(model="efficientnet_lite0"))
        assert intake.decoded is not None and intake.decoded.mode == "RGB"
        from_pixels = query_vectors(model="efficientnet_lite0", images=[intake])
        from_bytes = get_embedder("efficientnet_lite0").embed_bytes([data])
        assert np.abs(from_pixels - from_bytes).max() < 1e-5
    # A 1024x768 photo is decoded at half scale (both sides still >= 1.5 x 224), a 640x480
    # one in full (half would be 240 high).
    side = query_decode_side(model="efficientnet_lite0")
    assert image_validate(data=images.jpeg_bytes(1024, 768), decode_min_side=side).decoded.size == (512, 384)
    assert image_validate(data=images.jpeg_bytes(640, 480), decode_min_side=side).decoded.size == (640, 480)
    assert image_validate(data=images.png_bytes()).decoded is None  # only when asked
