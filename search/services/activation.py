"""Making a model searchable: its HNSW index built without locking writers, and searches
switched to it."""

from __future__ import annotations

import logging

from django.db import connection, transaction

from search.models import HNSW_BUILD_SETTING, ActiveModel, SearchTuning, hnsw_index_name, hnsw_index_sql
from search.registry import ModelSpec
from search.selectors.caches import search_caches_forget
from search.selectors.embedding_models import model_coverage, model_spec_get
from search.selectors.hnsw import search_index_valid
from search.services.locks import model_locked, session_lock
from simsite.errors import ServiceError

logger = logging.getLogger(__name__)


def embedding_index_ensure(*, model: str) -> None:
    """Make sure the model's HNSW index exists and is valid, building it without locking
    writers (CONCURRENTLY). An INVALID index left by a failed concurrent build is dropped
    and built again; a build under way in another process is left alone. Must run outside
    a transaction."""
    spec = model_spec_get(model)
    name = hnsw_index_name(spec.key)
    with session_lock(f"hnsw-build:{spec.key}") as taken:
        if taken:
            _index_build(spec, name)


def _index_build(spec: ModelSpec, name: str) -> None:
    valid = search_index_valid(model=spec.key)
    if valid:
        return
    with connection.cursor() as cursor:
        if valid is False:
            logger.warning("index %s is INVALID (a concurrent build failed); rebuilding it", name)
            cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        cursor.execute(HNSW_BUILD_SETTING)
        try:
            cursor.execute(hnsw_index_sql(spec.key, spec.dim, concurrently=True))
        finally:
            cursor.execute("RESET max_parallel_maintenance_workers")
    # A new graph: what was measured on an earlier one no longer holds (beat tunes it again).
    SearchTuning.objects.filter(model=spec.key).delete()


def active_model_set(*, model: str, force: bool = False) -> str:
    """Switch searches to ``model``; refused while items lack its vectors unless forced."""
    key = model_spec_get(model).key
    if not force:
        missing = sum(row["missing"] for row in model_coverage(model=key))
        if missing:
            raise ServiceError(
                "model_incomplete",
                f"{missing} items have no {key} vector yet; index them first or activate with force.",
                status_code=409,
            )
    embedding_index_ensure(model=key)
    with transaction.atomic():
        model_locked(key)  # a delete of this model waits, then sees it active (or this finds it gone)
        ActiveModel.objects.update_or_create(pk=1, defaults={"key": key})
    search_caches_forget()  # searches of this process read the switch at once
    return key
