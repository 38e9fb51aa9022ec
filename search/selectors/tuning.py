"""What ef_search tuning measures with: the recorded search queries, the tuning on record, and
the exact nearest neighbours (NumPy) its recall is measured against."""

from __future__ import annotations

import numpy as np

from search.items import ItemRef
from search.models import SearchQuerySample, SearchTuning
from search.selectors.embedding_models import model_spec_get
from simsite.replicas import read_connection


def search_tuning_get(*, model: str) -> SearchTuning | None:
    return SearchTuning.objects.filter(model=model).first()


def search_query_samples(*, model: str, limit: int) -> np.ndarray:
    """The newest ``limit`` recorded query vectors of the model (``SearchQuerySample``)."""
    rows = SearchQuerySample.objects.filter(model=model).order_by("-id").values_list("vector", flat=True)[:limit]
    vectors = [np.asarray(vector, dtype=np.float32) for vector in rows]
    return np.stack(vectors) if vectors else np.zeros((0, model_spec_get(model).dim), dtype=np.float32)


def search_query_sample_count(*, model: str) -> int:
    return SearchQuerySample.objects.filter(model=model).count()


def exact_neighbours(*, model: str, queries: np.ndarray, k: int, chunk: int = 20_000) -> list[list[ItemRef]]:
    """Each query's ``k`` nearest items by cosine similarity over all of the model's vectors,
    most similar first: the ground truth a recall is measured against. One pass over the
    vectors (binary COPY, ``chunk`` rows at a time) for all the queries, where an exact SQL
    search per query would read every vector once per query."""
    queries = np.asarray(queries, dtype=np.float32)
    queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    # Items as one signed number: a product's id, or minus a gallery image's.
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_items = np.zeros((len(queries), 0), dtype=np.int64)

    def merge(items: list[int], vectors: list[bytes]) -> None:
        nonlocal best_scores, best_items
        # pgvector's binary form: dimensions (uint16), a zero (uint16), big-endian float32s.
        matrix = np.frombuffer(b"".join(v[4:] for v in vectors), dtype=">f4").reshape(len(vectors), -1)
        matrix = matrix.astype(np.float32) / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        scores = np.concatenate([best_scores, queries @ matrix.T], axis=1)
        candidates = np.concatenate([best_items, np.broadcast_to(np.array(items), (len(queries), len(items)))], axis=1)
        keep = np.argpartition(-scores, min(k, scores.shape[1]) - 1, axis=1)[:, :k]  # the k best, unordered
        keep = np.take_along_axis(keep, np.argsort(-np.take_along_axis(scores, keep, axis=1), axis=1), axis=1)
        best_scores = np.take_along_axis(scores, keep, axis=1)
        best_items = np.take_along_axis(candidates, keep, axis=1)

    database = read_connection()
    database.ensure_connection()
    items: list[int] = []
    vectors: list[bytes] = []
    with (
        database.connection.cursor() as cursor,
        cursor.copy(
            "COPY (SELECT coalesce(product_id, -gallery_image_id)::int8, vector FROM search_embedding "
            "WHERE model = %s) TO STDOUT (FORMAT BINARY)",
            [model],
        ) as copy,
    ):
        copy.set_types(["int8", "bytea"])
        for item, vector in copy.rows():
            items.append(item)
            vectors.append(vector)
            if len(items) == chunk:
                merge(items, vectors)
                items, vectors = [], []
    if items:
        merge(items, vectors)
    return [[ItemRef.from_columns(i if i > 0 else None, -i if i < 0 else None) for i in row] for row in best_items]
