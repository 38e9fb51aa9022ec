"""Retrieval quality of an embedding model: precision@k, recall@k and mAP@10 by class, and
near-duplicate recall@1 under the edits people make to photos. NumPy and Pillow only.

Protocol: every held-out image is a query against the other held-out images (leave one
out); the relevant ones are those of its class.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

KS = (1, 5, 10)
MAP_AT = 10


def _jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


# A photo and the copies of it that should find it first (the search quality test's edits).
NEAR_DUPLICATE_EDITS: dict[str, Callable[[Image.Image], bytes]] = {
    "crop80": lambda im: _jpeg(im.crop((im.width // 10, im.height // 10, im.width * 9 // 10, im.height * 9 // 10))),
    "resize50": lambda im: _jpeg(im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.BILINEAR)),
    "jpeg30": lambda im: _jpeg(im, quality=30),
    "hflip": lambda im: _jpeg(ImageOps.mirror(im)),
    "rotate10": lambda im: _jpeg(
        im.rotate(10, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=(255, 255, 255))
    ),  # fmt: skip
    "brighter30": lambda im: _jpeg(ImageEnhance.Brightness(im).enhance(1.3)),
    "darker30": lambda im: _jpeg(ImageEnhance.Brightness(im).enhance(0.7)),
}


def near_duplicate_edits(data: bytes) -> dict[str, bytes]:
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        return {name: edit(image) for name, edit in NEAR_DUPLICATE_EDITS.items()}


def _ranked(vectors: np.ndarray, depth: int) -> np.ndarray:
    """For each row, the indices of the ``depth`` most similar other rows, best first."""
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    depth = min(depth, len(vectors) - 1)
    top = np.argpartition(-similarity, depth - 1, axis=1)[:, :depth] if depth > 0 else np.zeros((len(vectors), 0), int)
    order = np.take_along_axis(similarity, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def retrieval_metrics(vectors: np.ndarray, labels: Sequence[str], ks: Sequence[int] = KS) -> dict[str, object]:
    """Leave-one-out retrieval among ``vectors`` (unit rows): by class and overall (the mean
    over queries), ``precision@k``, ``recall@k`` (the share of the class found in the top k)
    and ``map@10``."""
    labels = np.asarray(labels)
    depth = max(*ks, MAP_AT)
    ranked = _ranked(np.asarray(vectors, dtype=np.float32), depth)
    hits = labels[ranked] == labels[:, None]  # (N, depth)
    relevant = np.array([(labels == label).sum() - 1 for label in labels])
    per_query: dict[str, np.ndarray] = {}
    for k in ks:
        per_query[f"precision@{k}"] = hits[:, :k].sum(axis=1) / k
        per_query[f"recall@{k}"] = hits[:, :k].sum(axis=1) / np.maximum(relevant, 1)
    cumulative = np.cumsum(hits[:, :MAP_AT], axis=1)
    precision_at = cumulative / np.arange(1, hits[:, :MAP_AT].shape[1] + 1)
    per_query[f"map@{MAP_AT}"] = (precision_at * hits[:, :MAP_AT]).sum(axis=1) / np.maximum(
        np.minimum(relevant, MAP_AT), 1
    )

    def summary(mask: np.ndarray) -> dict[str, float]:
        return {name: round(float(values[mask].mean()), 4) for name, values in per_query.items()}

    return {
        "queries": len(labels),
        "overall": summary(np.ones(len(labels), dtype=bool)),
        "by_class": {
            label: {"items": int((labels == label).sum()), **summary(labels == label)}
            for label in sorted(set(labels.tolist()))
        },  # fmt: skip
    }


def near_duplicate_recall(gallery: np.ndarray, queries: np.ndarray, originals: Sequence[int],
                          edits: Sequence[str]) -> dict[str, float]:  # fmt: skip
    """Recall@1 per edit: how often an edited copy's nearest gallery image is its original."""
    nearest = (np.asarray(queries) @ np.asarray(gallery).T).argmax(axis=1)
    found = nearest == np.asarray(originals)
    edits = np.asarray(edits)
    report = {name: round(float(found[edits == name].mean()), 4) for name in sorted(set(edits.tolist()))}
    report["all"] = round(float(found.mean()), 4) if len(found) else 0.0
    return report
