"""ef_search tuning: the search queries recorded for it, and the measure of the smallest
hnsw.ef_search that reaches the target recall."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence

import numpy as np
from django.conf import settings
from django.db import connection
from pgvector import Vector

from search.models import SearchQuerySample, SearchTuning
from search.selectors.caches import search_caches_forget
from search.selectors.embedding_models import model_spec_get
from search.selectors.embeddings import embedding_count, embedding_counts
from search.selectors.hnsw import TUNING_GROWTH, search_index_valid
from search.selectors.neighbours import items_similar_to
from search.selectors.tuning import exact_neighbours, search_query_sample_count, search_query_samples, search_tuning_get
from search.services.locks import session_lock
from simsite.errors import ServiceError

logger = logging.getLogger(__name__)

# The hnsw.ef_search values a tuning tries, smallest first (pgvector's default is 40).
EF_SEARCH_LADDER = (40, 60, 80, 120, 160, 240, 320, 480, 640, 1000)
TUNING_K = 10
# Fewer recorded queries than this measure a recall too loosely (about +-0.02 at 50 x 10).
TUNING_MIN_QUERIES = 50


def search_queries_record(*, model: str, vectors: Sequence[np.ndarray]) -> int:
    """Keep ``SEARCH_TUNE_SAMPLE_PERCENT`` of these search query vectors for tuning, the newest
    ``SEARCH_TUNE_QUERIES`` of the model staying. Returns how many were kept. One statement
    (the oldest dropped as the new ones go in): it runs on the search's path."""
    kept = [v for v in vectors if random.random() * 100 < settings.SEARCH_TUNE_SAMPLE_PERCENT]  # noqa: S311 - a sample
    if not kept:
        return 0
    values = ", ".join(["(%s, %s::vector, now())"] * len(kept))
    table = SearchQuerySample._meta.db_table
    sql = (
        f"WITH dropped AS (DELETE FROM {table} WHERE model = %s AND id <= (SELECT id FROM {table} "  # noqa: S608
        f"WHERE model = %s ORDER BY id DESC OFFSET %s LIMIT 1)) "
        f"INSERT INTO {table} (model, vector, created_at) VALUES {values}"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [model, model, max(0, settings.SEARCH_TUNE_QUERIES - len(kept)),
             *(part for vector in kept for part in (model, Vector(vector).to_text()))],
        )  # fmt: skip
    return len(kept)


def search_tune(*, model: str, target_recall: float | None = None, queries: int | None = None) -> SearchTuning:
    """Measure the smallest ``hnsw.ef_search`` at which the model's HNSW index finds
    ``target_recall`` of the true 10 nearest neighbours of the queries users sent (the newest
    recorded, ``search_queries_record``; with the margin of the estimate), and make searches
    use it.

    The truth is one exact pass over every vector (``exact_neighbours``). Recall depends on
    the built graph, not only on its size (three builds of the same million vectors: 0.936-0.963
    at one ef_search), and on the queries: stored vectors searched for themselves are found far
    more easily than new ones (0.96 against 0.82 at ef_search 40 on a million vectors), which is
    why the recorded queries are the measure. Takes seconds at 100,000 vectors, about a minute
    at a million (the pass reads every vector once).
    """
    spec = model_spec_get(model)
    target = settings.SEARCH_TUNE_RECALL if target_recall is None else target_recall
    limit = settings.SEARCH_TUNE_QUERIES if queries is None else queries
    if not 0 < target <= 1:
        raise ServiceError("invalid_recall", f"The target recall must be in (0, 1], not {target}.")
    if not search_index_valid(model=spec.key):
        raise ServiceError("no_index", f"Model '{spec.key}' has no search index to tune; index its items first.",
                           status_code=409)  # fmt: skip
    sample = search_query_samples(model=spec.key, limit=limit)
    needed = min(limit, TUNING_MIN_QUERIES)
    if len(sample) < needed:
        raise ServiceError(
            "too_few_queries",
            f"Model '{spec.key}' has {len(sample)} recorded search queries; tuning needs {needed} (searches by "
            f"image keep {settings.SEARCH_TUNE_SAMPLE_PERCENT}% of theirs).",
            status_code=409,
        )
    vectors = embedding_count(model=spec.key)
    if not vectors:
        raise ServiceError("no_vectors", f"Model '{spec.key}' has no vectors to search.", status_code=409)
    truths = exact_neighbours(model=spec.key, queries=sample, k=TUNING_K)
    steps = []
    for ef_search in EF_SEARCH_LADDER:
        recalls, times = [], []
        for vector, truth in zip(sample, truths, strict=True):
            started = time.perf_counter()
            matches = items_similar_to(vector=vector, model=spec.key, k=TUNING_K, ef_search=ef_search)
            times.append(1000 * (time.perf_counter() - started))
            recalls.append(len({match.ref for match in matches}.intersection(truth)) / len(truth))
        # The recall of these queries is an estimate of the recall of all queries: the value
        # chosen must reach the target with the estimate's margin (two standard errors, ~97.5%
        # one-sided). Without it, half the choices fall short: a million vectors, tuned at
        # 120 (0.951 on the recorded queries), gave 0.946 on 200 others.
        mean = float(np.mean(recalls))
        low = mean - 2 * float(np.std(recalls, ddof=1)) / np.sqrt(len(recalls)) if len(recalls) > 1 else mean
        steps.append({"ef_search": ef_search, "recall": round(mean, 4), "recall_low": round(low, 4),
                      "p50_ms": round(float(np.median(times)), 2)})  # fmt: skip
        if low >= target:
            break
    chosen = next((step for step in steps if step["recall_low"] >= target), steps[-1])
    tuning, _ = SearchTuning.objects.update_or_create(
        model=spec.key,
        defaults={"ef_search": chosen["ef_search"], "recall": chosen["recall"], "target_recall": target,
                  "vectors": vectors, "queries": len(sample), "steps": steps},
    )  # fmt: skip
    search_caches_forget()  # this process at once; the others within a minute
    if chosen["recall_low"] < target:
        logger.warning("model %s: recall@10 %.3f (at least %.3f) at ef_search %s, short of the target %.3f",
                       spec.key, chosen["recall"], chosen["recall_low"], chosen["ef_search"], target)  # fmt: skip
    return tuning


def search_tune_due() -> dict[str, int]:
    """Tune each model whose index holds at least ``SEARCH_TUNE_MIN_VECTORS`` vectors, with
    enough recorded queries, that was never tuned, has grown or shrunk by a quarter since, or
    has twice the recorded queries it was tuned on (a closer estimate; periodic: Celery beat).
    Nothing to do when ``SEARCH_HNSW_EF_SEARCH`` fixes the value. Returns the tuned values."""
    if settings.SEARCH_HNSW_EF_SEARCH is not None:
        return {}
    tuned = {}
    for model, vectors in embedding_counts().items():
        if vectors < settings.SEARCH_TUNE_MIN_VECTORS:
            continue
        recorded = search_query_sample_count(model=model)
        if recorded < min(settings.SEARCH_TUNE_QUERIES, TUNING_MIN_QUERIES):
            continue  # not searched enough yet: the size rule holds meanwhile
        last = search_tuning_get(model=model)
        same_size = last is not None and last.vectors / TUNING_GROWTH <= vectors <= last.vectors * TUNING_GROWTH
        if same_size and recorded < 2 * last.queries:
            continue
        with session_lock(f"search-tune:{model}") as taken:
            if not taken or not search_index_valid(model=model):
                continue  # another worker tunes it, or its index is still being built
            try:
                tuned[model] = search_tune(model=model).ef_search
            except ServiceError as error:  # a trained model deleted meanwhile, say
                logger.warning("tuning %s: %s", model, error.message)
    return tuned
