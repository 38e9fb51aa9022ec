"""The pgvector extension and the models' HNSW indexes: whether an index is ready, its size,
and the hnsw.ef_search a search of it runs with."""

from __future__ import annotations

from django.conf import settings
from django.db import connection

from search.models import SearchTuning, hnsw_index_name
from search.selectors.caches import INDEX_SIZES, TUNINGS, remembered
from simsite.replicas import read_connection


def pgvector_version() -> str | None:
    """The installed pgvector extension's version (None: not installed)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    return row[0] if row else None


# hnsw.ef_search of an untuned index when SEARCH_HNSW_EF_SEARCH is "auto": (vectors in the
# model's index up to, ef_search). A bigger graph needs more candidates for the same recall;
# these keep recall@10 >= 0.95 on benchmarks/search.py's clustered photo embeddings (hundreds
# of near copies of each photo: harder than most catalogs), graphs built with ef_construction
# 128: 100,000 vectors at 80 -> 0.990 (1.1 ms), 1,000,000 at 320 -> 0.954-0.970 over two
# builds (4.8-6.6 ms). They must hold for the unluckiest build: at 160, three builds of the
# same million vectors gave 0.936, 0.953 and 0.963. A tuned index (SearchTuning) runs with
# what was measured on it instead.
EF_SEARCH_BY_SIZE = ((200_000, 80), (500_000, 160), (2_000_000, 320), (5_000_000, 640))
EF_SEARCH_LARGEST = 1000
# A tuning holds while the index has at most this many times the vectors it was measured on.
TUNING_GROWTH = 1.25


def ef_search_for(model: str, *, filtered: bool = False) -> int:
    """The hnsw.ef_search a search of ``model`` runs with (before the 2k floor): the tuned
    value while the index is about the size it was tuned at, else by its size (never below
    an outgrown tuning). Doubled under product filters: when the first candidates hold fewer
    than k matches the iterative scan searches again, which costs more than a larger first
    search (1,000,000 vectors, a 10% category: 13.4 ms at ef_search 80, 7.2 ms at 160)."""
    if settings.SEARCH_HNSW_EF_SEARCH is not None:
        ef_search = settings.SEARCH_HNSW_EF_SEARCH
    else:
        vectors = _index_size(model)
        ef_search = next((ef for bound, ef in EF_SEARCH_BY_SIZE if vectors <= bound), EF_SEARCH_LARGEST)
        tuned = _tuning(model)
        if tuned is not None:
            tuned_ef, tuned_vectors = tuned
            ef_search = tuned_ef if vectors <= tuned_vectors * TUNING_GROWTH else max(tuned_ef, ef_search)
    return min(1000, ef_search * (2 if filtered else 1))


def _tuning(model: str) -> tuple[int, int] | None:
    """The model's tuned (ef_search, vectors), remembered a minute per process."""
    database = read_connection()

    def read() -> tuple[int, int] | None:
        rows = SearchTuning.objects.using(database.alias).filter(model=model)
        return rows.values_list("ef_search", "vectors").first()

    return remembered(TUNINGS, (database.alias, model), read)


def search_index_valid(*, model: str) -> bool | None:
    """Whether the model's HNSW index is ready: True, False for an INVALID one (a failed
    concurrent build), None when there is none."""
    with read_connection().cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
            [hnsw_index_name(model)],
        )
        row = cursor.fetchone()
    return None if row is None else bool(row[0])


def _index_size(model: str) -> int:
    """Vectors in the model's HNSW index as PostgreSQL last counted them (``reltuples``: set by
    CREATE INDEX, VACUUM and ANALYZE; counted here if never set), remembered a minute."""
    database = read_connection()

    def count() -> int:
        with database.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [hnsw_index_name(model)]
            )
            row = cursor.fetchone()
            if row is None or row[0] < 0:
                cursor.execute("SELECT count(*) FROM search_embedding WHERE model = %s", [model])
                row = cursor.fetchone()
        return int(row[0])

    return remembered(INDEX_SIZES, (database.alias, model), count)
