"""Read replicas: searches, duplicates and lists read from a streaming replica when
``DATABASE_REPLICA_URLS`` names any; writes, and reads that must see their own writes, stay
on the primary (``default``).

Reads go to a replica only inside ``replica_reads()`` — the read-only API handlers and pages
open it through ``reads_from_replica`` — never by default, so a service that reads and then
writes always reads the primary. A replica that cannot be reached, or fails under a request,
is left out for ``DATABASE_REPLICA_RETRY_SECONDS``; the request then runs on the next replica
or on the primary. Raw SQL in selectors takes its connection from ``read_connection()``.
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
    """The database this block's reads go to."""
    return _current.get() or DEFAULT_DB_ALIAS


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
    token = _current.set(_pick())
    try:
        yield read_alias()
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


def on_replica(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``function``'s reads on a replica; if the replica fails under it, run it once more
    on the primary. Safe for handlers that only read, or whose writes are idempotent and go
    to the primary in a transaction (which reads the primary too: ``ReplicaRouter``)."""
    with replica_reads() as alias:
        try:
            return function(*args, **kwargs)
        except DatabaseError as error:
            if not _lost(alias, error):
                raise
            replica_mark_down(alias)
    token = _current.set(DEFAULT_DB_ALIAS)
    try:
        return function(*args, **kwargs)
    finally:
        _current.reset(token)


def reads_from_replica(handler: Callable[..., T]) -> Callable[..., T]:
    """Decorate a view or API handler that only reads: it runs on a replica. The session
    and the user are loaded from the primary first (a login or a message just written must
    be seen; DRF has authenticated before the handler runs)."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        for arg in args:
            if isinstance(arg, HttpRequest) and hasattr(arg, "user"):
                _ = arg.user.is_authenticated  # loads the session and the user here, on the primary
        return on_replica(handler, *args, **kwargs)

    return wrapper


class ReplicaRouter:
    """Reads inside ``replica_reads()`` go to its replica; everything else to the primary."""

    def db_for_read(self, model: type, **hints: Any) -> str | None:
        if connections[DEFAULT_DB_ALIAS].in_atomic_block:
            return None  # a write transaction under way reads what it wrote: the primary
        return _current.get()

    def db_for_write(self, model: type, **hints: Any) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: object, obj2: object, **hints: Any) -> bool:
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == DEFAULT_DB_ALIAS
