"""Retrieval metrics, checked against values worked out by hand."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from search.evaluation import NEAR_DUPLICATE_EDITS, near_duplicate_edits, near_duplicate_recall, retrieval_metrics


def _unit(*rows):
    array = np.asarray(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_retrieval_metrics_by_hand():
    # a1, a2 close together; b1 near a1 but b2 far away.
    vectors = _unit([1, 0, 0], [0.9, 0.1, 0], [0.8, 0.3, 0], [0, 0, 1])
    labels = ["a", "a", "b", "b"]
    report = retrieval_metrics(vectors, labels, ks=(1, 2))
    # Rankings: a1 -> a2, b1, b2; a2 -> a1, b1, b2; b1 -> a2, a1, b2; b2 -> b1, a2, a1 (by cosine).
    assert report["by_class"]["a"]["precision@1"] == 1.0
    assert report["by_class"]["b"]["precision@1"] == 0.5  # b1 finds an a first; b2 finds b1
    assert report["overall"]["precision@1"] == 0.75
    assert report["overall"]["precision@2"] == pytest.approx((0.5 + 0.5 + 0 + 0.5) / 4)
    assert report["by_class"]["b"]["recall@2"] == 0.5  # b2 finds its only relevant item; b1 does not
    # AP@10 with one relevant item: 1 / its rank. a1: 1, a2: 1, b1: 1/3, b2: 1.
    assert report["overall"]["map@10"] == pytest.approx((1 + 1 + 1 / 3 + 1) / 4, abs=1e-4)
    assert report["queries"] == 4 and report["by_class"]["a"]["items"] == 2


def test_near_duplicate_recall_per_edit():
    gallery = _unit([1, 0], [0, 1])
    queries = _unit([0.9, 0.1], [0.2, 0.8], [0.9, 0.2])
    report = near_duplicate_recall(gallery, queries, originals=[0, 1, 1], edits=["hflip", "hflip", "crop80"])
    assert report == {"crop80": 0.0, "hflip": 1.0, "all": pytest.approx(2 / 3, abs=1e-4)}


def test_near_duplicate_edits_are_decodable_jpegs():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "PNG")
    edited = near_duplicate_edits(buffer.getvalue())
    assert set(edited) == set(NEAR_DUPLICATE_EDITS)
    for data in edited.values():
        assert Image.open(io.BytesIO(data)).format == "JPEG"
