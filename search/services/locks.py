"""Locks that put concurrent writes one after the other: PostgreSQL session-level advisory
locks, and the row lock of a model trained here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

from search.models import TrainedModel
from search.registry import MODELS, ModelSpec
from search.selectors.embedding_models import model_spec_get


@contextmanager
def session_lock(name: str) -> Iterator[bool]:
    """A PostgreSQL session-level advisory lock, if free: yields whether it was taken."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [name])
        taken = cursor.fetchone()[0]
    try:
        yield taken
    finally:
        if taken:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [name])


def model_lock(key: str) -> bool:
    """Lock the row of the model ``key`` until the transaction ends, if it was trained here, so
    that activating it, indexing it and deleting it happen one after the other: a check of one
    (``trained_model_delete``: not active, not being indexed) cannot pass while another is under
    way. Returns whether the model can be used (False: gone, or not trained yet). Must run
    inside a transaction."""
    if key in MODELS:
        return True
    status = TrainedModel.objects.select_for_update().filter(key=key).values_list("status", flat=True)
    return list(status) == [TrainedModel.Status.SUCCEEDED]


def model_locked(key: str) -> ModelSpec:
    """The model ``key`` (``model_lock``); raises ``unknown_model`` if it is gone."""
    model_lock(key)
    return model_spec_get(key)
