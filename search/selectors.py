"""Reads for the search engine: the active model, coverage, and the nearest-neighbour query."""

from __future__ import annotations

import functools
import math
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

import numpy as np
import psycopg
from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, connection, transaction
from django.db.models import Count, Exists, F, Max, OuterRef, QuerySet
from psycopg.adapt import Dumper
from psycopg.pq import Format

from catalog.models import GalleryImage, Product
from search.datasets import CATALOG
from search.items import GALLERY_IMAGE, KINDS, PRODUCT, ItemKind, ItemRef, kinds_of
from search.models import (
    ActiveModel,
    Collection,
    DuplicateDismissalItem,
    DuplicatePair,
    DuplicateScan,
    Embedding,
    IndexBatch,
    IndexJob,
    SearchQuerySample,
    SearchTuning,
    TrainedModel,
    hnsw_index_name,
    model_key_checked,
)
from search.registry import MODELS, ModelSpec
from simsite.errors import ServiceError
from simsite.files import shown_path
from simsite.replicas import read_connection, replica_read
from simsite.sse import row_updates

T = TypeVar("T")


def pgvector_version() -> str | None:
    """The installed pgvector extension's version (None: not installed)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    return row[0] if row else None


def trained_model_spec(row: TrainedModel) -> ModelSpec:
    base = MODELS[row.base]
    return ModelSpec(
        key=row.key, dim=row.dim, architecture=f"{base.architecture} fine-tuned", weights=row.weights,
        description=f"{base.key} fine-tuned here on {row.metrics.get('dataset') or trained_model_source(trained=row)}: "
        f"{len(row.classes)} "
        f"classes, {row.dim}-d hidden layer", input_size=row.config.get("input_size") or base.input_size,
        mean=base.mean, std=base.std,
        kind="trained", base=row.base, classes=tuple(row.classes),
    )  # fmt: skip


def model_spec_get(key: str) -> ModelSpec:
    """The embedding model ``key``: pretrained, or trained here (and trained successfully)."""
    if key in MODELS:
        return MODELS[key]
    row = TrainedModel.objects.filter(key=key, status=TrainedModel.Status.SUCCEEDED).first()
    if row is None:
        known = ", ".join([*MODELS, *TrainedModel.objects.filter(status=TrainedModel.Status.SUCCEEDED)
                           .values_list("key", flat=True)])  # fmt: skip
        raise ServiceError("unknown_model", f"Unknown embedding model '{key[:100]}'; known: {known}.", field="model")
    return trained_model_spec(row)


def model_specs() -> list[ModelSpec]:
    """Every embedding model: the pretrained ones, then those trained here, oldest first."""
    trained = TrainedModel.objects.filter(status=TrainedModel.Status.SUCCEEDED).order_by("created_at", "id")
    return [*MODELS.values(), *(trained_model_spec(row) for row in trained)]


def trained_model_get(*, key: str) -> TrainedModel:
    return TrainedModel.objects.get(key=key)


def trained_model_list() -> QuerySet[TrainedModel]:
    return TrainedModel.objects.all()


def trained_model_source(*, trained: TrainedModel) -> str:
    """Where it was trained, as users may see it: 'catalog', or the folder relative to the
    training root (never the server's path)."""
    if trained.source == CATALOG:
        return CATALOG
    return shown_path(trained.source, roots=[settings.EMBEDDING_TRAINING_ROOT])


def active_model_key(*, recent: bool = False) -> str:
    """The model searches use. ``recent``: as this process read it up to a second ago (the
    search path: one query less per search; ``active_model_set`` forgets it in its process at
    once, and a switch reaches the other processes within that second)."""

    def read() -> str:
        row = ActiveModel.objects.filter(pk=1).values_list("key", flat=True).first()
        return row or settings.EMBEDDING_DEFAULT_MODEL

    return _remembered(_ACTIVE_MODEL, (), read, seconds=1) if recent else read()


def _current_vectors(model: str, field: str) -> QuerySet[Embedding]:
    """Vectors of ``model`` computed from the item's current image."""
    return Embedding.objects.filter(**{field: OuterRef("pk")}, model=model, sha256=OuterRef("sha256"))


def products_with_embedded_flag(queryset: QuerySet[Product], *, model: str | None = None) -> QuerySet[Product]:
    return queryset.annotate(embedded=Exists(_current_vectors(model or active_model_key(), PRODUCT.name)))


def gallery_with_embedded_flag(queryset: QuerySet[GalleryImage], *, model: str | None = None) -> QuerySet[GalleryImage]:
    return queryset.annotate(embedded=Exists(_current_vectors(model or active_model_key(), GALLERY_IMAGE.name)))


def models_being_indexed() -> set[str]:
    """The active model plus every model a job is building right now."""
    building = IndexJob.objects.exclude(state__in=IndexJob.TERMINAL).values_list("model", flat=True).distinct()
    return {active_model_key(), *building}


def index_job_get(*, pk: int) -> IndexJob:
    return IndexJob.objects.get(pk=pk)


def index_job_list() -> QuerySet[IndexJob]:
    """Newest first (paged by the API; finished jobs are pruned after JOB_RETENTION_DAYS)."""
    return IndexJob.objects.all()


def index_job_failures(*, job: IndexJob, limit: int = 50) -> list[dict[str, object]]:
    """The first failed items of a job: [{"type", "id", "error"}]."""
    failures: list[dict[str, object]] = []
    for batch in job.batches.exclude(failures=[]).order_by("number").values_list("failures", flat=True):
        failures.extend(batch)
        if len(failures) >= limit:
            break
    return failures[:limit]


def index_job_for_items(*, kind: str, ids: list[int]) -> IndexJob | None:
    """The newest job of the active model that embeds any of these items."""
    if not ids:
        return None
    column = "product_ids" if kind == PRODUCT.name else "gallery_ids"
    # The job was made by the write that just happened: look among the newest jobs only,
    # not through every batch on record.
    recent = IndexJob.objects.filter(model=active_model_key()).order_by("-pk").values("pk")[:20]
    batches = IndexBatch.objects.filter(**{f"{column}__overlap": ids}, job__in=recent)
    return IndexJob.objects.filter(pk__in=batches.values("job_id")).order_by("-pk").first()


def index_status() -> list[dict[str, object]]:
    """Coverage per collection for the active model and every model with vectors."""
    keys = [active_model_key(), *sorted(set(Embedding.objects.values_list("model", flat=True).distinct()))]
    return [row for key in dict.fromkeys(keys) for row in model_coverage(model=key)]


def index_job_updates(job_id: int) -> Iterator[IndexJob]:
    """The job each time its progress or state changes, until it ends."""
    return row_updates(
        lambda: IndexJob.objects.filter(pk=job_id).first(),
        is_finished=lambda job: job.state in IndexJob.TERMINAL,
        signature=lambda job: (job.state, job.total, job.done, job.failed),
    )


def items_by_ref(refs: Sequence[ItemRef], *, model: str | None = None) -> dict[ItemRef, object]:
    """The products and gallery images named, with their ``embedded`` flag (missing ones left out)."""
    key = model or active_model_key()
    found: dict[ItemRef, object] = {}
    for kind in KINDS.values():
        ids = [ref.id for ref in refs if ref.kind == kind.name]
        if ids:
            queryset = kind.model.objects.filter(pk__in=ids).annotate(embedded=Exists(_current_vectors(key, kind.name)))
            found.update({ItemRef(kind.name, item.pk): item for item in queryset})
    return found


def model_coverage(*, model: str) -> list[dict[str, object]]:
    """Per collection: items, items with a current vector of ``model``, and the difference."""
    rows = []
    for kind in KINDS.values():
        items = kind.model.objects.count()
        embedded = Embedding.objects.filter(model=model, **{f"{kind.name}__sha256": F("sha256")}).count()
        rows.append(
            {
                "collection": kind.collection,
                "model": model,
                "items": items,
                "embedded": embedded,
                "missing": items - embedded,
            }
        )
    return rows


def embedding_model_list() -> list[dict[str, object]]:
    active = active_model_key()
    result = []
    metrics = dict(TrainedModel.objects.filter(status=TrainedModel.Status.SUCCEEDED).values_list("key", "metrics"))
    for spec in model_specs():
        coverage = model_coverage(model=spec.key)
        result.append(
            {
                "key": spec.key,
                "dim": spec.dim,
                "active": spec.key == active,
                "kind": spec.kind,
                "base": spec.base or None,
                "description": spec.description,
                "weights": spec.weights,
                "embedded": sum(int(row["embedded"]) for row in coverage),
                "missing": sum(int(row["missing"]) for row in coverage),
                "metrics": _headline(metrics.get(spec.key, {})),
            }
        )
    return result


def _headline(metrics: dict[str, object]) -> dict[str, object]:
    """A trained model's test-split figures, without the per-class detail."""
    return {name: metrics[name] for name in ("dataset", "test", "base_test", "test_accuracy") if name in metrics}


@dataclass(frozen=True)
class Match:
    ref: ItemRef
    similarity: float
    # With ``items_similar_to(with_items=True)``: the product or gallery image itself, with its
    # ``embedded`` flag.
    item: object | None = field(default=None, compare=False, repr=False)


class _QueryVector:
    """A query vector for ``_search_cursor``: sent in pgvector's binary form."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values


class _QueryVectorDumper(Dumper):
    """pgvector's binary input (dimensions, a zero, big-endian float32s). Sent untyped (oid 0):
    PostgreSQL takes the type from the statement's ``::vector(dim)`` cast. Nothing to format
    here and nothing to parse there: 0.5 ms less per search than the 1280-number text form."""

    format = Format.BINARY
    oid = 0

    def dump(self, obj: _QueryVector) -> bytes:
        return struct.pack(">HH", len(obj.values), 0) + obj.values.astype(">f4", copy=False).tobytes()


class _SearchCursor(psycopg.Cursor):
    """Parameters bound by the server (Django's own cursors write them into the SQL text), each
    statement prepared once per connection when ``prepare`` is set."""

    prepare = False

    def execute(self, query: str, params: object = None, **kwargs: object) -> _SearchCursor:
        kwargs.setdefault("prepare", self.prepare)
        return super().execute(query, params, **kwargs)


def _search_cursor(database: object) -> object:
    """A cursor for the nearest-neighbour SQL on ``database``, still wrapped by Django (query
    logging and execute wrappers see it), that takes ``_QueryVector`` parameters."""
    database.ensure_connection()
    if database.connection.prepare_threshold is None:  # Django's setting: psycopg prepares nothing
        # Only statements executed with prepare=True (Django's own cursors never prepare).
        database.connection.prepare_threshold = 2**31 - 1
    cursor = _SearchCursor(database.connection)
    cursor.adapters.register_dumper(_QueryVector, _QueryVectorDumper)
    if database.queries_logged:  # DEBUG: Django logs the SQL of unprepared statements only
        return database.make_debug_cursor(cursor)
    cursor.prepare = settings.SEARCH_PREPARED_STATEMENTS
    return database.make_cursor(cursor)


def _similar_query(
    *,
    vector: np.ndarray,
    model: str,
    collection: str,
    k: int,
    categories: Sequence[str],
    min_price: Decimal | None,
    max_price: Decimal | None,
    exclude: ItemRef | None,
    exact: bool,
    with_items: bool = False,
    ef_search: int | None = None,
) -> tuple[str, list[object], dict[str, str]] | None:
    """The nearest-neighbour SQL, its parameters and the session settings it runs with: rows
    of (product id, gallery image id, similarity, vector's sha256), then with ``with_items``
    each kind's item columns (``_with_items``)."""
    spec = model_spec_get(model)
    dim = spec.dim
    filtered = bool(categories) or min_price is not None or max_price is not None
    if filtered and collection == Collection.GALLERY:
        return None  # product filters leave no gallery image
    # The model and k are written into the statement (a key checked to be identifier characters,
    # an int): a cached generic plan of a prepared statement can then use the model's partial
    # index, which it cannot prove usable for "model = $2" (it scanned and sorted instead: 140
    # ms instead of 1 ms on 20,000 vectors), and knows the LIMIT; PostgreSQL then reuses
    # one plan per statement instead of planning each search.
    where = [f"e.model = '{model_key_checked(spec.key)}'"]
    params: list[object] = []
    if filtered:
        where.append(f"e.{PRODUCT.column} IS NOT NULL")
    elif collection != Collection.ALL:
        where.append(f"e.{kinds_of(collection)[0].column} IS NOT NULL")
    # The product's category and price are on the vector's row (Embedding's docstring).
    if categories:
        where.append("e.category = ANY(%s)")
        params.append(list(categories))
    if min_price is not None:
        where.append("e.price >= %s")
        params.append(min_price)
    if max_price is not None:
        where.append("e.price <= %s")
        params.append(max_price)
    if not exact and _candidates_at_most(where, params, settings.SEARCH_EXACT_MAX_ROWS):
        exact = True  # so few rows that reading them all is about as fast as the index, and exact
    if exclude is not None:
        where.append(f"e.{exclude.item_kind.column} IS DISTINCT FROM %s")
        params.append(exclude.id)
    # The query vector is sent once, in binary; the index and the similarity read it from q.
    query = f"WITH q AS (SELECT %s::vector({dim}) AS v)"
    distance = f"e.vector::vector({dim}) <=> (SELECT v FROM q)"  # noqa: S608 - fixed fragments only
    # The index orders by half-precision distance; "+ 0" hides the full-precision one from
    # it, so an exact request is a real exact scan. Similarities are always full precision.
    approximate = f"e.vector::halfvec({dim}) <=> (SELECT v::halfvec({dim}) FROM q)"  # noqa: S608
    order = f"({distance}) + 0" if exact else approximate
    conditions = " AND ".join(where)
    columns = f"e.product_id, e.gallery_image_id, 1 - ({distance}) AS similarity, e.sha256"
    hits = f"SELECT {columns} FROM search_embedding e WHERE {conditions} ORDER BY {order} LIMIT {int(k)}"  # noqa: S608
    sql = f"{query} {_with_items(hits) if with_items else hits}"
    session: dict[str, str] = {}
    if not exact:
        # ef_search bounds how many candidates HNSW keeps: at least 2k of them.
        ef_search = ef_search or ef_search_for(spec.key, filtered=filtered)
        session["hnsw.ef_search"] = str(min(1000, max(ef_search, 2 * k)))
        # Past a few thousand rows the index is always the faster plan, but PostgreSQL prices
        # a 1280-d distance like an addition: at ef_search 320 it chose a 600 ms scan over a
        # 3 ms index scan. Every exact plan sorts, the index scan does not: no sorting here.
        session["enable_sort"] = "off"
        if filtered or exclude is not None or collection != Collection.ALL:
            # Keep scanning the graph until k rows pass the filters (pgvector >= 0.8).
            session["hnsw.iterative_scan"] = "relaxed_order"
    return sql, [_QueryVector(np.asarray(vector, dtype=np.float32)), *params], session


@functools.cache
def _item_fields(kind: ItemKind) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The attribute names and the columns of a kind's model fields, in the ORM's order."""
    fields = kind.model._meta.concrete_fields
    return tuple(each.attname for each in fields), tuple(each.column for each in fields)


def _with_items(hits: str) -> str:
    """The hits joined to their items after the LIMIT, so that the items come with the same
    statement (no second query for a page of results): per kind, its columns and whether the
    vector is of the item's current image (its ``embedded`` flag: one vector per item and model)."""
    columns, joins = [], []
    for number, kind in enumerate(KINDS.values()):
        alias = f"i{number}"
        columns += [f'{alias}."{column}"' for column in _item_fields(kind)[1]] + [f"{alias}.sha256 = h.sha256"]
        joins.append(f"LEFT JOIN {kind.table} {alias} ON {alias}.id = h.{kind.column}")
    return f"SELECT h.*, {', '.join(columns)} FROM ({hits}) h {' '.join(joins)}"  # noqa: S608


def _match_with_item(row: tuple, alias: str) -> Match:
    """A ``Match`` from a ``_with_items`` row: the item made as the ORM would (``from_db``)."""
    ref = ItemRef.from_columns(row[0], row[1])
    start = 4  # after the hit's own columns: product id, gallery image id, similarity, sha256
    item = None
    for kind in KINDS.values():
        names = _item_fields(kind)[0]
        values = row[start : start + len(names)]
        if kind.name == ref.kind and values[0] is not None:
            item = kind.model.from_db(alias, names, values)
            item.embedded = bool(row[start + len(names)])
        start += len(names) + 1
    return Match(ref, round(float(row[2]), 4), item)


# Counts that steer plan choices only, so one up to a minute old is good enough and saves a
# query per search: key -> (when counted, count), per process.
_CANDIDATE_COUNTS: dict[tuple, tuple[float, int]] = {}
_INDEX_SIZES: dict[tuple, tuple[float, int]] = {}
_TUNINGS: dict[tuple, tuple[float, tuple[int, int] | None]] = {}
_ACTIVE_MODEL: dict[tuple, tuple[float, str]] = {}
_COUNT_SECONDS = 60


def _remembered(
    counts: dict[tuple, tuple[float, T]], key: tuple, count: Callable[[], T], *, seconds: float = _COUNT_SECONDS
) -> T:
    now = time.monotonic()
    cached = counts.get(key)
    if cached is None or now - cached[0] > seconds:
        if len(counts) > 10_000:
            counts.clear()
        cached = counts[key] = (now, count())
    return cached[1]


def _candidates_at_most(where: list[str], params: list[object], bound: int) -> bool:
    """Whether the query's filters leave at most ``bound`` vectors (a count that stops at
    ``bound + 1`` rows, remembered for a minute per filter set)."""

    def count() -> int:
        sql = f"SELECT count(*) FROM (SELECT 1 FROM search_embedding e WHERE {' AND '.join(where)} LIMIT %s) c"  # noqa: S608
        with read_connection().cursor() as cursor:
            cursor.execute(sql, [*params, bound + 1])
            return cursor.fetchone()[0]

    key = (tuple(where), tuple(tuple(p) if isinstance(p, list) else p for p in params), bound)
    return _remembered(_CANDIDATE_COUNTS, key, count) <= bound


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

    return _remembered(_TUNINGS, (database.alias, model), read)


def search_tuning_get(*, model: str) -> SearchTuning | None:
    return SearchTuning.objects.filter(model=model).first()


def embedding_count(*, model: str) -> int:
    return Embedding.objects.filter(model=model).count()


def embedding_counts() -> dict[str, int]:
    """Vectors per model."""
    return dict(Embedding.objects.values_list("model").annotate(count=Count("id")).values_list("model", "count"))


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

    return _remembered(_INDEX_SIZES, (database.alias, model), count)


def search_caches_forget() -> None:
    """Count and read again on the next search (tests, which change the data wholesale, call it;
    so does ``active_model_set``)."""
    _CANDIDATE_COUNTS.clear()
    _INDEX_SIZES.clear()
    _TUNINGS.clear()
    _ACTIVE_MODEL.clear()


def _set_locally(cursor: object, session: dict[str, str]) -> None:
    """Transaction-local settings, in one round trip."""
    if session:
        calls = ", ".join("set_config(%s, %s, true)" for _ in session)
        cursor.execute(f"SELECT {calls}", [part for item in session.items() for part in item])  # noqa: S608


def _similar_rows(database: object, sql: str, params: list[object], session: dict[str, str]) -> list[tuple]:
    """The statement's rows, run with its transaction-local settings. Outside a transaction,
    BEGIN, the settings, the statement and COMMIT go to the server together (psycopg's pipeline
    mode): one round trip instead of four, each of which costs most right after a model
    forward (its caches cold: 0.4 ms against 0.06 ms warm)."""
    if database.in_atomic_block or not database.get_autocommit():
        with transaction.atomic(using=database.alias), _search_cursor(database) as cursor:  # a savepoint
            _set_locally(cursor, session)
            cursor.execute(sql, params)
            return cursor.fetchall()
    with database.wrap_database_errors, _search_cursor(database) as cursor, _search_cursor(database) as control:
        raw = database.connection
        try:
            with raw.pipeline():
                control.execute("BEGIN")
                _set_locally(control, session)
                cursor.execute(sql, params)
                control.execute("COMMIT")
        except psycopg.Error:
            if not raw.broken and raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                raw.rollback()  # the failed statement left the transaction open
            raise
        return cursor.fetchall()


@replica_read  # a pipeline on the replica: read again whole on the primary if the replica fails under it
def items_similar_to(
    *,
    vector: np.ndarray,
    model: str,
    collection: str = Collection.ALL,
    k: int = 6,
    threshold: float | None = None,
    categories: Sequence[str] = (),
    min_price: Decimal | None = None,
    max_price: Decimal | None = None,
    exclude: ItemRef | None = None,
    exact: bool = False,
    with_items: bool = False,
    ef_search: int | None = None,
) -> list[Match]:
    """The ``k`` items nearest to ``vector`` under ``model``, most similar first.

    One SQL statement ordered by cosine distance on the model's partial HNSW index, or an
    exact scan when ``exact`` is set (the planner also scans exactly where that is cheaper,
    as for small collections). Product filters restrict the search to products; pgvector's
    iterative scan keeps filtered queries returning k rows. ``with_items``: each match
    carries its item (``Match.item``), read by the same statement; items deleted meanwhile
    are left out. ``ef_search`` overrides ``ef_search_for`` (tuning measures with it).
    """
    query = _similar_query(
        vector=vector, model=model, collection=collection, k=k, categories=categories,
        min_price=min_price, max_price=max_price, exclude=exclude, exact=exact, with_items=with_items,
        ef_search=ef_search,
    )  # fmt: skip
    if query is None:
        return []
    sql, params, session = query
    database = read_connection()  # a read replica inside replica_reads() (simsite/replicas.py)
    rows = _similar_rows(database, sql, params, session)
    if with_items:
        matches = [match for match in (_match_with_item(row, database.alias) for row in rows) if match.item]
    else:
        matches = [Match(ItemRef.from_columns(row[0], row[1]), round(float(row[2]), 4)) for row in rows]
    # relaxed_order may return near-ties slightly out of order; the contract is sorted.
    matches.sort(key=lambda match: match.similarity, reverse=True)
    if threshold is not None:
        matches = [match for match in matches if match.similarity >= threshold]
    return matches


@replica_read
def items_similar_plan(**query: object) -> str:
    """PostgreSQL's plan for the query ``items_similar_to`` would run with these arguments."""
    built = _similar_query(**{"collection": Collection.ALL, "k": 6, "categories": (), "min_price": None,
                              "max_price": None, "exclude": None, "exact": False, **query})  # fmt: skip
    if built is None:
        return ""
    sql, params, session = built
    database = read_connection()
    with transaction.atomic(using=database.alias), _search_cursor(database) as cursor:
        _set_locally(cursor, session)
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


@replica_read  # a transaction on the replica
def _neighbour_pairs_now(spec: ModelSpec, collection: str, threshold: float, count: int) -> list[tuple]:
    timeout = settings.DUPLICATES_STATEMENT_TIMEOUT_MS
    try:
        database = read_connection()
        with transaction.atomic(using=database.alias), database.cursor() as cursor:
            cursor.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(timeout)])
            cursor.execute(duplicate_neighbours_sql(spec.dim, collection),
                           [spec.key, settings.DUPLICATES_NEIGHBOURS, spec.key, threshold])  # fmt: skip
            return cursor.fetchall()
    except OperationalError as error:
        if getattr(error.__cause__, "sqlstate", None) != "57014":  # query_canceled
            raise
        raise ServiceError("duplicates_timeout", f"Finding duplicates among {count} vectors took longer "
                           f"than {timeout / 1000:g} s; try a narrower collection, or again later.",
                           status_code=503) from None  # fmt: skip


def duplicate_neighbours_sql(dim: int, collection: str, *, id_range: bool = False) -> str:
    """Each vector's nearest neighbours at least a similarity apart: one LATERAL k-NN join on
    the HNSW index (about n log n, never an n-squared loop). Parameters: model, neighbours,
    model, [first id, last id,] floor."""
    condition = "" if collection == Collection.ALL else f"AND {{t}}.{kinds_of(collection)[0].column} IS NOT NULL"
    ids = "AND a.id > %s AND a.id <= %s" if id_range else ""
    return f"""
        SELECT a.product_id, a.gallery_image_id, n.product_id, n.gallery_image_id, n.similarity
        FROM search_embedding a
        CROSS JOIN LATERAL (
            SELECT b.product_id, b.gallery_image_id,
                   1 - (b.vector::vector({dim}) <=> a.vector::vector({dim})) AS similarity
            FROM search_embedding b
            WHERE b.model = %s AND b.id <> a.id {condition.format(t="b")}
            ORDER BY b.vector::halfvec({dim}) <=> a.vector::halfvec({dim})
            LIMIT %s
        ) n
        WHERE a.model = %s {condition.format(t="a")} {ids} AND n.similarity >= %s
    """  # noqa: S608 - only fixed fragments are interpolated


def duplicate_scan_latest(*, model: str, finished: bool = False) -> DuplicateScan | None:
    scans = DuplicateScan.objects.filter(model=model)
    if finished:
        scans = scans.filter(state=DuplicateScan.State.SUCCEEDED)
    return scans.order_by("-created_at", "-id").first()


def embedding_stamp(*, model: str) -> dict[str, int | None]:
    """How many vectors a model has and its newest one's id: what a cached answer saw."""
    return Embedding.objects.filter(model=model).aggregate(count=Count("id"), last=Max("id"))


def _scanned_pairs(scan: DuplicateScan, collection: str, threshold: float) -> list[tuple]:
    if threshold < settings.DUPLICATES_PAIR_FLOOR:
        raise ServiceError("threshold_below_scan", f"This library's duplicates are found in the background at "
                           f"{settings.DUPLICATES_PAIR_FLOOR:g} or more; ask for a threshold of at least that.",
                           field="threshold")  # fmt: skip
    pairs = DuplicatePair.objects.filter(scan=scan, similarity__gte=threshold)
    if collection != Collection.ALL:
        column = kinds_of(collection)[0].column
        pairs = pairs.filter(**{f"a_{column}__isnull": False, f"b_{column}__isnull": False})
    return list(pairs.values_list("a_product_id", "a_gallery_image_id", "b_product_id", "b_gallery_image_id",
                                  "similarity"))  # fmt: skip


def duplicate_groups(
    *, model: str, collection: str, threshold: float, stamp: dict[str, int | None] | None = None
) -> list[dict[str, object]]:
    """Groups of items whose vectors are at least ``threshold`` similar, most similar first.

    Each item's nearest neighbours come from the HNSW index (``duplicate_neighbours_sql``);
    pairs above the threshold are joined into groups (connected components). A group's
    similarity is its weakest joining pair. Up to ``DUPLICATES_SYNC_MAX_VECTORS`` vectors the
    pairs are found during the request, under ``DUPLICATES_STATEMENT_TIMEOUT_MS`` (503 past it);
    beyond, they come from the newest finished background scan (``DuplicateScan``; 503
    ``duplicates_scanning`` until the first one is done). The threshold snaps down to a 0.001
    grid (so the cache serves every nearby request), and a group lists at most
    ``DUPLICATES_MAX_GROUP_ITEMS`` items (``size`` says how many it has). Items of a group
    someone marked as not duplicates (``DuplicateDismissal``) never share a group. Cached until the
    vectors, the scan or the dismissals change. ``stamp``: the model's ``embedding_stamp`` if
    the caller has it.
    """
    threshold = math.floor(round(threshold * 1000, 6)) / 1000
    spec = model_spec_get(model)
    stamp = stamp or embedding_stamp(model=spec.key)
    scan = None
    if stamp["count"] > settings.DUPLICATES_SYNC_MAX_VECTORS:
        scan = duplicate_scan_latest(model=spec.key, finished=True)
        if scan is None:
            running = duplicate_scan_latest(model=spec.key)
            progress = f" ({running.percent:g}% done)" if running is not None else ""
            raise ServiceError("duplicates_scanning", f"Duplicates among {stamp['count']} vectors are being found "
                               f"in the background{progress}; try again in a while.", status_code=503)  # fmt: skip
    dismissed = DuplicateDismissalItem.objects.aggregate(count=Count("id"), last=Max("id"))
    key = (f"duplicates:{spec.key}:{collection}:{threshold}:{stamp['count']}:{stamp['last']}"
           f":{dismissed['count']}:{dismissed['last']}:{scan.pk if scan else ''}")  # fmt: skip
    cached = cache.get(key)
    if cached is not None:
        return cached
    if scan is not None:
        pairs = _scanned_pairs(scan, collection, threshold)
    else:
        pairs = _neighbour_pairs_now(spec, collection, threshold, stamp["count"])
    dismissals: dict[ItemRef, set[int]] = {}
    if dismissed["count"]:
        for dismissal, product, gallery_image in DuplicateDismissalItem.objects.values_list(
            "dismissal_id", "product_id", "gallery_image_id"
        ):
            dismissals.setdefault(ItemRef.from_columns(product, gallery_image), set()).add(dismissal)
    parent: dict[ItemRef, ItemRef] = {}

    def root(node: ItemRef) -> ItemRef:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    weakest: dict[ItemRef, float] = {}
    # Dismissals are cannot-link rules: two items of one dismissed group never end up in one
    # group, not even through a third item. The strongest pairs are joined first.
    cannot: dict[ItemRef, set[int]] = {}
    for a_product, a_gallery, b_product, b_gallery, similarity in sorted(pairs, key=lambda row: -row[4]):
        a, b = ItemRef.from_columns(a_product, a_gallery), ItemRef.from_columns(b_product, b_gallery)
        ra, rb = root(a), root(b)
        if ra == rb:
            continue
        for node, top in ((a, ra), (b, rb)):
            cannot.setdefault(top, set(dismissals.get(node, ())))
        if cannot[ra] & cannot[rb]:
            continue
        parent[ra] = rb
        cannot[rb] |= cannot.pop(ra)
        weakest[rb] = min(weakest.get(ra, 1.0), weakest.get(rb, 1.0), float(similarity))
    members: dict[ItemRef, list[ItemRef]] = {}
    for node in parent:
        members.setdefault(root(node), []).append(node)
    cap = settings.DUPLICATES_MAX_GROUP_ITEMS
    groups = [{"similarity": round(weakest.get(top, 1.0), 4), "size": len(items), "items": sorted(items)[:cap]}
              for top, items in members.items() if len(items) > 1]  # fmt: skip
    groups.sort(key=lambda group: (-group["similarity"], -group["size"], group["items"][0]))
    cache.set(key, groups, 600)
    return groups


# How the duplicates review picks the copy to keep: the first of these keys wins, then the next.
KEEP_RULES: dict[str, str] = {
    "resolution": "the largest resolution, then the largest file, then the oldest",
    "size": "the largest file, then the largest resolution, then the oldest",
    "oldest": "the first added",
    "newest": "the last added",
}


@dataclass(frozen=True)
class DuplicateCopy:
    """One item of a duplicate group as the review shows it."""

    ref: ItemRef
    item: object
    label: str
    width: int
    height: int
    bytes: int
    added_at: object

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _copy_of(ref: ItemRef, item: object) -> DuplicateCopy:
    file = ref.item_kind.file_of(item)
    try:
        size = file.storage.size(file.name)
    except OSError:  # the stored file is gone: it is the copy not to keep
        size = 0
    label = item.original_filename if ref.kind == GALLERY_IMAGE.name else f"{item.sku} {item.name}"
    added = item.uploaded_at if ref.kind == GALLERY_IMAGE.name else item.created_at
    return DuplicateCopy(ref, item, label, item.width, item.height, size, added)


def _keep_order(rule: str):  # noqa: ANN202 - a sort key
    if rule == "size":
        return lambda copy: (-copy.bytes, -copy.pixels, copy.added_at, copy.ref)
    if rule == "oldest":
        return lambda copy: (copy.added_at, copy.ref)
    if rule == "newest":
        return lambda copy: (-copy.added_at.timestamp(), copy.ref)
    return lambda copy: (-copy.pixels, -copy.bytes, copy.added_at, copy.ref)


def duplicate_groups_detailed(groups: Sequence[dict[str, object]], *, rule: str) -> list[dict[str, object]]:
    """The groups (a page of ``duplicate_groups``) with each copy's resolution, file size and
    date, the copy to keep first (by ``rule``, one of ``KEEP_RULES``); items deleted meanwhile
    are left out, and groups left with one item dropped."""
    items = items_by_ref([ref for group in groups for ref in group["items"]])
    detailed = []
    for group in groups:
        copies = sorted((_copy_of(ref, items[ref]) for ref in group["items"] if ref in items), key=_keep_order(rule))
        if len(copies) > 1:
            detailed.append({"similarity": group["similarity"], "percent": round(group["similarity"] * 100, 1),
                             "size": group["size"], "copies": copies})  # fmt: skip
    return detailed
