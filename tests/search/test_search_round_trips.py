"""What a search costs in round trips: outside a transaction its BEGIN, settings, statement and
COMMIT go to PostgreSQL together (psycopg's pipeline mode), and the search path reads the
active model at most once a second per process."""

from __future__ import annotations

import time

import numpy as np
import psycopg
import pytest
from django.db import DataError, connection

from search.models import ActiveModel, hnsw_index_name
from search.selectors import neighbours
from search.selectors.embedding_models import active_model_key
from search.selectors.neighbours import items_similar_to
from search.services.activation import active_model_set
from tests.search.helpers import indexed_products

# Searches outside a transaction are what is tested: a test transaction would hide them.
pytestmark = pytest.mark.django_db(transaction=True)

MODEL, DIM = "resnet18", 512


@pytest.fixture
def indexed(settings) -> np.ndarray:
    """300 products with clustered vectors and the model's HNSW index, always used."""
    settings.SEARCH_EXACT_MAX_ROWS = 0
    rng = np.random.default_rng(3)
    data = rng.standard_normal((8, DIM))[rng.integers(0, 8, 300)] + 0.5 * rng.standard_normal((300, DIM))
    data = (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)
    indexed_products(data, model=MODEL)
    yield data
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {hnsw_index_name(MODEL)}")


def _status() -> psycopg.pq.TransactionStatus:
    return connection.connection.info.transaction_status


@pytest.fixture
def plans() -> list[str]:
    """The plans of this connection's statements as they ran, with the settings they ran under
    (PostgreSQL's auto_explain, its log sent to the client)."""
    connection.ensure_connection()
    logged: list[str] = []
    raw = connection.connection

    def handler(notice: psycopg.errors.Diagnostic) -> None:
        logged.append(notice.message_primary or "")

    raw.add_notice_handler(handler)
    with connection.cursor() as cursor:
        try:
            cursor.execute("LOAD 'auto_explain'")
        except Exception:  # noqa: BLE001 - a server without contrib, or a role that may not load it
            pytest.skip("auto_explain cannot be loaded on this server")
        for setting in ("log_min_duration = 0", "log_settings = on"):
            cursor.execute(f"SET auto_explain.{setting}")
        cursor.execute("SET client_min_messages = log")
    yield logged
    raw.remove_notice_handler(handler)
    with connection.cursor() as cursor:
        cursor.execute("RESET ALL")


def test_a_search_outside_a_transaction_runs_with_its_settings_and_leaves_none_open(indexed, plans):
    assert not connection.in_atomic_block
    matches = items_similar_to(vector=indexed[0], model=MODEL, k=100)
    # The settings reached the statement, set in its own transaction in the same pipeline: it
    # used the index (enable_sort off), and 100 rows came out of it, which pgvector's default
    # hnsw.ef_search of 40 candidates could not have given.
    plan = next(text for text in plans if f"Index Scan using {hnsw_index_name(MODEL)}" in text)
    assert "enable_sort = 'off'" in plan, plan
    assert len(matches) == 100
    exact = items_similar_to(vector=indexed[0], model=MODEL, k=100, exact=True)
    assert len({m.ref for m in matches} & {m.ref for m in exact}) >= 90
    assert _status() == psycopg.pq.TransactionStatus.IDLE
    with connection.cursor() as cursor:
        cursor.execute("SHOW hnsw.ef_search")
        assert cursor.fetchone()[0] == "40"  # the setting was the search's own (local), not the session's


@pytest.mark.parametrize("late_commit", [False, True], ids=["error-at-pipeline-end", "error-before-commit"])
def test_a_failed_search_is_rolled_back_and_the_connection_still_serves(indexed, late_commit, monkeypatch):
    # Where the failure surfaces depends on timing: at the pipeline's end (psycopg's error), or,
    # when the server's answer is already in by the time COMMIT is queued, from that execute,
    # wrapped by Django's cursor. The second is forced here by pausing before COMMIT.
    if late_commit:
        execute = neighbours._SearchCursor.execute

        def paused(self, query, params=None, **kwargs):  # noqa: ANN001, ANN202
            if query == "COMMIT":
                time.sleep(0.2)
            return execute(self, query, params, **kwargs)

        monkeypatch.setattr(neighbours._SearchCursor, "execute", paused)
    broken = indexed[1].copy()
    broken[0] = np.nan  # pgvector refuses NaN: the statement fails inside the pipeline
    with pytest.raises(DataError):
        items_similar_to(vector=broken, model=MODEL, k=5)
    assert _status() == psycopg.pq.TransactionStatus.IDLE
    assert items_similar_to(vector=indexed[1], model=MODEL, k=5)[0].similarity == pytest.approx(1.0, abs=1e-3)


def test_the_search_path_reads_the_active_model_once_a_second_and_a_switch_at_once(
    django_assert_num_queries, monkeypatch
):
    assert active_model_key(recent=True) == "efficientnet_lite0"
    ActiveModel.objects.update_or_create(pk=1, defaults={"key": MODEL})  # another process switched
    with django_assert_num_queries(0):
        assert active_model_key(recent=True) == "efficientnet_lite0"
    assert active_model_key() == MODEL  # everything but the search path reads it every time
    time.sleep(1.05)
    assert active_model_key(recent=True) == MODEL

    monkeypatch.setattr("search.services.activation.model_coverage", lambda model: [])
    monkeypatch.setattr("search.services.activation.embedding_index_ensure", lambda model: None)
    active_model_set(model="efficientnet_lite0")  # a switch made in this process is seen at once
    assert active_model_key(recent=True) == "efficientnet_lite0"
