"""Micro-batching of query embeddings: concurrent searches in one web process share a forward.

A web process serves many requests on its threads; each used to run its own forward, so on a
few cores the forwards fought over the same cores (and over torch's thread pools) and most of
the machine went to contention. Here each request prepares its own images (decode, resize,
normalise: a bad file fails its request and nobody else's), hands the tensors to the model's
``QueryBatcher`` and waits; one thread per process and model runs the forwards, each on every
request that arrived during a short window (``QUERY_BATCH_WINDOW_MS``, up to
``QUERY_BATCH_MAX_IMAGES`` images, by default one model pass), and gives each request its own rows. Like the dynamic
batchers of model servers (Triton's ``max_queue_delay``), but the window closes as soon as no
other request of the process is being prepared, so a lone search is not held back.

No torch here: the batcher stacks nothing itself, it calls the embedder's
``embed_preprocessed``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
from django.conf import settings

logger = logging.getLogger(__name__)

# The forward thread ends after this long without a request and starts again on the next one:
# a process, or a test's throwaway embedder, keeps no idle thread for ever.
IDLE_EXIT_SECONDS = 30.0


class BatchEmbedder(Protocol):
    key: str
    forward_batch: int  # images per model pass

    def embed_preprocessed(self, tensors: Sequence[object]) -> np.ndarray: ...


class _Request:
    __slots__ = ("items", "done", "vectors", "error")

    def __init__(self, items: list[object]) -> None:
        self.items = items
        self.done = threading.Event()
        self.vectors: np.ndarray | None = None
        self.error: BaseException | None = None


class QueryBatcher:
    """One model's forward thread in this process, and the requests waiting for it.

    ``embed(items)`` blocks until the rows of ``items`` are computed, in one forward with the
    other requests' items of the same window, and returns them (or raises what the forward
    raised: a failed forward fails the requests of its batch, each with the error, and the next
    batch is tried afresh). ``forwards`` counts the forwards run (the tests and the benchmark
    read it).
    """

    def __init__(self, embedder: BatchEmbedder, *, window_seconds: float, max_images: int) -> None:
        self._embedder = weakref.ref(embedder)  # the embedder's cache owns it, not its batcher
        self.window_seconds, self.max_images = window_seconds, max_images
        self.forwards = 0
        self._reset()
        _in_this_process.add(self)

    def _reset(self) -> None:
        self._condition = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._preparing = 0
        self._thread: threading.Thread | None = None

    @property
    def waiting(self) -> int:
        """Requests queued for the next forward."""
        with self._condition:
            return len(self._queue)

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Mark a request whose images are being prepared: the window stays open for it."""
        with self._condition:
            self._preparing += 1
        try:
            yield
        finally:
            with self._condition:
                self._preparing -= 1
                self._condition.notify_all()

    def embed(self, items: Sequence[object]) -> np.ndarray:
        """Rows for ``items`` (prepared for the embedder's forward), computed with concurrent
        requests' items in one forward."""
        request = _Request(list(items))
        with self._condition:
            self._queue.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="query-batcher", daemon=True)
                try:
                    self._thread.start()
                except BaseException:  # no thread to be had: this request fails, the next one tries again
                    self._thread = None
                    self._queue.remove(request)
                    raise
            self._condition.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.vectors

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[_Request] | None:
        with self._condition:
            idle_until = time.monotonic() + IDLE_EXIT_SECONDS
            while not self._queue:
                remaining = idle_until - time.monotonic()
                if remaining <= 0:
                    self._thread = None
                    return None
                self._condition.wait(remaining)
            closes = time.monotonic() + self.window_seconds
            while self._preparing and self._queued_images() < self.max_images:
                remaining = closes - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            batch = [self._queue.popleft()]
            images = len(batch[0].items)
            while self._queue and images + len(self._queue[0].items) <= self.max_images:
                images += len(self._queue[0].items)
                batch.append(self._queue.popleft())
            return batch

    def _queued_images(self) -> int:
        return sum(len(request.items) for request in self._queue)

    def _run(self, batch: list[_Request]) -> None:
        try:
            embedder = self._embedder()
            if embedder is None:
                raise RuntimeError("the embedding model of this batcher was unloaded")
            vectors = embedder.embed_preprocessed([item for request in batch for item in request.items])
            self.forwards += 1
        except BaseException as error:  # noqa: BLE001 - every waiter must be answered, whatever happened
            logger.warning("a query batch of %d requests failed: %r", len(batch), error)
            for request in batch:
                request.error = error
                request.done.set()
            return
        start = 0
        for request in batch:
            request.vectors = vectors[start : start + len(request.items)]
            start += len(request.items)
            request.done.set()


_batchers: weakref.WeakKeyDictionary[object, QueryBatcher] = weakref.WeakKeyDictionary()
_batchers_lock = threading.Lock()


def query_batcher(embedder: BatchEmbedder) -> QueryBatcher:
    """The batcher of ``embedder`` in this process (made on first use, with the settings then)."""
    with _batchers_lock:
        batcher = _batchers.get(embedder)
        if batcher is None:
            batcher = QueryBatcher(
                embedder,
                window_seconds=settings.QUERY_BATCH_WINDOW_MS / 1000,
                max_images=settings.QUERY_BATCH_MAX_IMAGES or embedder.forward_batch,
            )
            _batchers[embedder] = batcher
        return batcher


# Every batcher of this process. A forked child (gunicorn --preload) has neither the parent's
# forward threads nor locks it can trust: each batcher starts afresh there, before any thread of
# the child can use it.
_in_this_process: weakref.WeakSet[QueryBatcher] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _batchers_lock
    _batchers_lock = threading.Lock()
    for batcher in list(_in_this_process):
        batcher._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)
