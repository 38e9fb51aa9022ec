"""The nearest-neighbour query: the one SQL statement a search runs, sent through a psycopg
cursor that binds the query vector in pgvector's binary form, and its plan."""

from __future__ import annotations

import contextlib
import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import psycopg
from django.conf import settings
from django.db import DatabaseError, transaction
from psycopg.adapt import Dumper
from psycopg.pq import Format

from search.items import KINDS, PRODUCT, ItemKind, ItemRef, kinds_of
from search.models import Collection, model_key_checked
from search.selectors.caches import CANDIDATE_COUNTS, remembered
from search.selectors.embedding_models import model_spec_get
from search.selectors.hnsw import ef_search_for
from simsite.replicas import read_connection, replica_read


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


def _candidates_at_most(where: list[str], params: list[object], bound: int) -> bool:
    """Whether the query's filters leave at most ``bound`` vectors (a count that stops at
    ``bound + 1`` rows, remembered for a minute per filter set)."""

    def count() -> int:
        sql = f"SELECT count(*) FROM (SELECT 1 FROM search_embedding e WHERE {' AND '.join(where)} LIMIT %s) c"  # noqa: S608
        with read_connection().cursor() as cursor:
            cursor.execute(sql, [*params, bound + 1])
            return cursor.fetchone()[0]

    key = (tuple(where), tuple(tuple(p) if isinstance(p, list) else p for p in params), bound)
    return remembered(CANDIDATE_COUNTS, key, count) <= bound


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
        except (psycopg.Error, DatabaseError):  # psycopg's, or Django's wrapping when an execute raised it
            if not raw.broken and raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):  # the statement's error is the one to report
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
