"""A trained encoder's background set (the negatives of the signers' own models) read from
storage: a file that is missing, damaged or of the wrong shape leaves verification
writer-independent, with an error logged, rather than failing every verify with a 500."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from signatures import selectors
from signatures.registry import EncoderSpec

DIM = 16


def _spec(background: str) -> EncoderSpec:
    return EncoderSpec(key=f"enc-{background}", dim=DIM, backbone="efficientnet_lite0", description="",
                       threshold=0.5, kind="trained", background=background)  # fmt: skip


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def _fresh_cache():
    selectors._backgrounds.clear()
    yield
    selectors._backgrounds.clear()


def test_a_readable_background_is_read_once_per_process():
    vectors = np.random.default_rng(0).standard_normal((5, DIM)).astype(np.float32)
    name = default_storage.save("signatures/encoders/good.npy", ContentFile(_npy(vectors)))
    spec = _spec(name)
    assert np.array_equal(selectors.encoder_background(spec), vectors)
    default_storage.delete(name)
    assert np.array_equal(selectors.encoder_background(spec), vectors)  # from the process's cache


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "is missing"),
        (_npy(np.ones((5, DIM)))[:40], "cannot be read"),  # truncated
        (b"not an array at all", "cannot be read"),
        (_npy(np.array([{"a": 1}], dtype=object)), "cannot be read"),  # a pickle inside: refused
        (_npy(np.ones((5, DIM + 1))), "has shape"),  # another encoder's
        (_npy(np.ones(DIM)), "has shape"),
    ],
    ids=["missing", "truncated", "not-npy", "pickled", "other-dim", "one-dimensional"],
)
def test_a_background_that_cannot_serve_leaves_verification_writer_independent(content, said, caplog):
    name = "signatures/encoders/bad.npy"
    if content is not None:
        name = default_storage.save(name, ContentFile(content))
    with caplog.at_level(logging.ERROR, logger="signatures.selectors"):
        assert selectors.encoder_background(_spec(name)) is None
    assert said in caplog.text and "writer-independent only" in caplog.text
