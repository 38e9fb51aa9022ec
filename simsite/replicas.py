"""Read replicas: searches, duplicates and lists read from a streaming replica when
``DATABASE_REPLICA_URLS`` names any; writes, and reads that must see their own writes, stay
on the primary (``default``).

Reads go to a replica only inside ``replica_reads()`` — the read-only API handlers and pages
open it through ``reads_from_replica`` — never by default, so a service that reads and then
writes always reads the primary. Raw SQL in selectors takes its connection from
``read_connection()``.

A replica that cannot be reached, or fails under a request, is left out for
``DATABASE_REPLICA_RETRY_SECONDS``, and what failed on it is read again on the primary: the one
statement (a queryset, a Django cursor's ``execute`` outside a transaction: ``_statement_failover``),
or the one read function whose statements belong together (a transaction, a pipeline, a COPY:
``replica_read``). The rest of the request stays as it was: a handler's model forward, URL
fetch or recorded query runs once (the whole handler used to run again on the primary).
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.http import HttpRequest

logger = logging.getLogger(__name__)

T = TypeVar("T")

_current: ContextVar[str | None] = ContextVar("simsite_read_alias", default=None)
_down_until: dict[str, float] = {}
_turn = itertools.count()
# "canceling statement due to conflict with recovery": the standby replaying WAL under the query.
_RECOVERY_CONFLICT = "40001"


def read_alias() -> str:
    """The database this block's reads go to: its replica, or the primary once the replica
    failed under the block."""
    alias = _current.get()
    if alias is None or _down_until.get(alias, 0) > time.monotonic():
        return DEFAULT_DB_ALIAS
    return alias


def read_connection() -> Any:
    """The connection raw SQL reads through: the replica of the block, but the primary inside
    a write transaction (it must read what it wrote)."""
    if connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return connections[DEFAULT_DB_ALIAS]
    return connections[read_alias()]


def replica_mark_down(alias: str) -> None:
    _down_until[alias] = time.monotonic() + settings.DATABASE_REPLICA_RETRY_SECONDS
    try:
        connections[alias].close()
    except DatabaseError:
        pass
    logger.warning("read replica %s is unavailable; reads go elsewhere for %ss", alias,
                   settings.DATABASE_REPLICA_RETRY_SECONDS)  # fmt: skip


def _pick() -> str:
    """A replica that answers (in turn, to spread the load), else the primary."""
    now = time.monotonic()
    candidates = [alias for alias in settings.DATABASE_REPLICAS if _down_until.get(alias, 0) <= now]
    start = next(_turn)
    for offset in range(len(candidates)):
        alias = candidates[(start + offset) % len(candidates)]
        try:
            connections[alias].ensure_connection()
        except DatabaseError:
            replica_mark_down(alias)
            continue
        return alias
    return DEFAULT_DB_ALIAS


@contextmanager
def replica_reads() -> Iterator[str]:
    """Send this block's reads to a healthy replica (the primary when there is none, or
    when the block runs inside a transaction on the primary, which must see its writes)."""
    if _current.get() is not None or not settings.DATABASE_REPLICAS or connections[DEFAULT_DB_ALIAS].in_atomic_block:
        yield read_alias()
        return
    alias = _pick()
    token = _current.set(alias)
    try:
        if alias == DEFAULT_DB_ALIAS:
            yield alias
        else:
            with connections[alias].execute_wrapper(_statement_failover):
                yield alias
    finally:
        _current.reset(token)


def _lost(alias: str, error: DatabaseError) -> bool:
    """Whether ``error`` means the replica failed (rather than the query, or a write on the
    primary): its connection is broken, or recovery cancelled the query (a conflict)."""
    if alias == DEFAULT_DB_ALIAS:
        return False
    if getattr(error.__cause__, "sqlstate", None) == _RECOVERY_CONFLICT:
        return True
    return not connections[alias].is_usable()


def _statement_failover(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict) -> Any:
    """An execute wrapper of a replica's connection (inside ``replica_reads``): a statement
    the replica failed under is run on the primary, and the cursor the caller holds reads its
    rows from there. Only a statement that stands alone: outside a transaction on the replica,
    on a plain cursor of the connection (a search's own cursor binds its parameters its own way
    and runs in a pipeline: ``replica_read`` retries it)."""
    try:
        return execute(sql, params, many, context)
    except DatabaseError as error:
        database, cursor = context["connection"], context["cursor"]
        alone = not database.in_atomic_block and type(cursor.cursor) is database.connection.cursor_factory
        if not alone or not _lost(database.alias, error):
            raise
        replica_mark_down(database.alias)
    primary = connections[DEFAULT_DB_ALIAS].cursor()
    result = primary.executemany(sql, params) if many else primary.execute(sql, params)
    cursor.cursor = primary.cursor  # the caller fetches the rows through the cursor it holds
    return result


def replica_read(function: Callable[..., T]) -> Callable[..., T]:
    """Decorate a read whose statements belong together (a transaction, a pipeline, a COPY on
    the replica): if the replica fails under it, it is left out and the read runs once more,
    on the primary. Only reads: what the caller did before and does after runs once."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        alias = read_alias()
        try:
            return function(*args, **kwargs)
        except DatabaseError as error:
            if not _lost(alias, error):
                raise
            replica_mark_down(alias)
        return function(*args, **kwargs)  # read_alias() is the primary now

    return wrapper


def reads_from_replica(handler: Callable[..., T]) -> Callable[..., T]:
    """Decorate a view or API handler that only reads: its reads go to a replica (those that
    fail there are read again on the primary, the handler itself runs once). The session and
    the user are loaded from the primary first (a login or a message just written must be
    seen; DRF has authenticated before the handler runs)."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        for arg in args:
            if isinstance(arg, HttpRequest) and hasattr(arg, "user"):
                _ = arg.user.is_authenticated  # loads the session and the user here, on the primary
        with replica_reads() as alias:
            try:
                return handler(*args, **kwargs)
            except DatabaseError as error:
                if read_alias() == alias and _lost(alias, error):  # a read nothing retried: leave the replica out
                    replica_mark_down(alias)
                raise

    return wrapper


class ReplicaRouter:
    """Reads inside ``replica_reads()`` go to its replica; everything else to the primary."""

    def db_for_read(self, model: type, **hints: Any) -> str | None:
        if connections[DEFAULT_DB_ALIAS].in_atomic_block or _current.get() is None:
            return None  # a write transaction under way reads what it wrote: the primary
        return read_alias()

    def db_for_write(self, model: type, **hints: Any) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: object, obj2: object, **hints: Any) -> bool:
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == DEFAULT_DB_ALIAS
