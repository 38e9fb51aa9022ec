"""Query images embedded in the web process share forwards (search.query_batcher)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from search.query_batcher import QueryBatcher, query_batcher
from search.querying import query_vectors
from simsite.errors import ServiceError
from tests import images
from tests.search.helpers import FakeEmbedder


def _in_threads(calls: list[Callable[[], object]], *, timeout: float = 60) -> list[object]:
    """Run the calls at once, each in its own thread; each one's result or exception, in order."""
    results: list[object] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = calls[index]()
        except Exception as error:  # noqa: BLE001 - the test looks at which call failed and how
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a caller was never answered"
    return results


def _searches(photos: list[bytes]) -> list[Callable[[], object]]:
    return [lambda data=data: query_vectors(model="efficientnet_lite0", images=[data]) for data in photos]


@pytest.fixture
def counted(fake_embedder, settings):
    """The fake model with a 50 ms forward (requests arriving meanwhile queue up), and its batcher."""
    settings.QUERY_BATCH_WINDOW_MS = 200
    fake_embedder.before_embed = lambda: time.sleep(0.05)
    return fake_embedder, query_batcher(fake_embedder)


def test_the_default_model_gives_the_same_vectors_batched_as_one_at_a_time():
    from search.embedders import get_embedder

    embedder = get_embedder("efficientnet_lite0")
    photos = [images.jpeg_bytes(320 + 16 * i, 240, seed=i) for i in range(6)] + [images.png_bytes(200, 300, seed=9)]
    singles = np.stack([embedder.embed_bytes([data])[0] for data in photos])
    tensors = [embedder.preprocess_bytes(data) for data in photos]
    batcher = QueryBatcher(embedder, window_seconds=30, max_images=16)
    # The window stays open while a request is being prepared: every caller queues, then one forward.
    results: list[object] = []
    calls = [lambda tensor=tensor: batcher.embed([tensor]) for tensor in tensors]
    runner = threading.Thread(target=lambda: results.extend(_in_threads(calls)))
    with batcher.preparing():
        runner.start()
        deadline = time.monotonic() + 30
        while batcher.waiting < len(tensors) and time.monotonic() < deadline:
            time.sleep(0.01)
    runner.join(60)
    assert batcher.forwards == 1
    batched = np.concatenate(results)
    assert batched.shape == (len(photos), 1280)
    assert np.allclose(batched, singles, atol=1e-5, rtol=0)


@pytest.mark.django_db
def test_concurrent_searches_share_forwards_and_each_gets_its_own_vector(counted):
    embedder, batcher = counted
    photos = [images.jpeg_bytes(64, 48, seed=100 + i) for i in range(8)]
    results = _in_threads(_searches(photos))
    for data, vectors in zip(photos, results, strict=True):
        assert vectors.shape == (1, 1280)
        assert np.array_equal(vectors[0], FakeEmbedder().embed_bytes([data])[0])
    assert batcher.forwards <= 4  # 8 concurrent requests, one forward each before


@pytest.mark.django_db
def test_a_bad_image_fails_its_request_alone(counted):
    embedder, batcher = counted
    photos = [images.jpeg_bytes(64, 48, seed=200 + i) for i in range(4)]
    bad = images.truncated_jpeg()
    *good, failed = _in_threads(_searches([*photos, bad]))
    assert isinstance(failed, ServiceError)
    for data, vectors in zip(photos, good, strict=True):
        assert np.array_equal(vectors[0], FakeEmbedder().embed_bytes([data])[0])


@pytest.mark.django_db
def test_a_failed_forward_fails_its_batch_with_the_error_and_the_next_batch_runs(counted):
    embedder, batcher = counted
    embedder.fail = RuntimeError("CUDA out of memory")
    photos = [images.jpeg_bytes(64, 48, seed=300 + i) for i in range(4)]
    results = _in_threads(_searches(photos))
    assert all(isinstance(result, RuntimeError) and "out of memory" in str(result) for result in results)
    embedder.fail = None
    assert query_vectors(model="efficientnet_lite0", images=[photos[0]]).shape == (1, 1280)


def test_the_window_bounds_how_long_a_request_waits():
    embedder = FakeEmbedder()
    batcher = QueryBatcher(embedder, window_seconds=0.3, max_images=16)
    tensor = embedder.preprocess_bytes(images.png_bytes())
    batcher.embed([tensor])  # the forward thread started
    # Alone, a request is not held for the window at all.
    started = time.monotonic()
    batcher.embed([tensor])
    assert time.monotonic() - started < 0.1
    # With another request being prepared (and never arriving), it is held for the window, no longer.
    with batcher.preparing():
        started = time.monotonic()
        batcher.embed([tensor])
        waited = time.monotonic() - started
    assert 0.3 <= waited < 0.6


def test_a_full_batch_goes_without_waiting_for_the_window():
    embedder = FakeEmbedder()
    batcher = QueryBatcher(embedder, window_seconds=30, max_images=2)
    tensor = embedder.preprocess_bytes(images.png_bytes())
    with batcher.preparing():
        started = time.monotonic()
        results = _in_threads([lambda: batcher.embed([tensor]), lambda: batcher.embed([tensor])])
        assert time.monotonic() - started < 5
    assert all(result.shape == (1, 1280) for result in results)


def test_a_forked_process_gets_a_forward_thread_of_its_own():
    """gunicorn --preload forks workers after the app loaded: the parent's thread does not come along."""
    import os

    embedder = FakeEmbedder()
    batcher = QueryBatcher(embedder, window_seconds=0.01, max_images=16)
    tensor = embedder.preprocess_bytes(images.png_bytes())
    batcher.embed([tensor])  # the parent's forward thread is running
    pid = os.fork()
    if pid == 0:  # the child: answer within the alarm, or die of it
        import signal

        signal.alarm(20)
        with batcher.preparing():
            pass
        ok = batcher.embed([tensor]).shape == (1, 1280)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_forward_thread_that_cannot_start_fails_that_request_and_the_next_one_tries_again(monkeypatch):
    embedder = FakeEmbedder()
    batcher = QueryBatcher(embedder, window_seconds=0.01, max_images=16)
    tensor = embedder.preprocess_bytes(images.png_bytes())
    start = threading.Thread.start

    def refused(self):  # noqa: ANN001, ANN202
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        batcher.embed([tensor])
    assert batcher.waiting == 0  # nothing left queued for a thread that never ran
    monkeypatch.setattr(threading.Thread, "start", start)
    assert batcher.embed([tensor]).shape == (1, 1280)  # not left waiting on a thread that does not exist
