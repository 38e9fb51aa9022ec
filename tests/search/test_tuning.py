"""Tuning hnsw.ef_search on a model's own index: the ground truth, the measured choice, and
searches running with it."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from catalog.models import Product
from search.models import Embedding, SearchQuerySample, SearchTuning, hnsw_index_sql
from search.selectors.caches import search_caches_forget
from search.selectors.hnsw import EF_SEARCH_BY_SIZE, ef_search_for
from search.selectors.neighbours import items_similar_to
from search.selectors.tuning import exact_neighbours
from search.services.tuning import EF_SEARCH_LADDER, search_queries_record, search_tune, search_tune_due
from simsite.errors import ServiceError
from tests.search.helpers import indexed_products

pytestmark = pytest.mark.django_db

MODEL, DIM, COUNT = "resnet18", 512, 3000


@pytest.fixture(scope="module")
def vectors(django_db_setup, django_db_blocker):
    """3,000 products with unclustered random vectors (hard for a graph: a small ef_search
    misses neighbours) and the model's HNSW index; committed, removed at the end."""
    with django_db_blocker.unblock():
        rng = np.random.default_rng(11)
        data = rng.standard_normal((COUNT, DIM)).astype(np.float32)
        data /= np.linalg.norm(data, axis=1, keepdims=True)
        indexed_products(data, model=MODEL, sku="T")
        yield data
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS embedding_{MODEL}_hnsw")
        Embedding.objects.filter(model=MODEL).delete()
        Product.objects.all().delete()


def test_exact_neighbours_agree_with_an_exact_search(vectors):
    queries = np.random.default_rng(3).standard_normal((6, DIM)).astype(np.float32)
    # Chunks of 700 rows: the running top 10 is merged across five chunks.
    found = exact_neighbours(model=MODEL, queries=queries, k=10, chunk=700)
    for query, refs in zip(queries, found, strict=True):
        assert refs == [m.ref for m in items_similar_to(vector=query, model=MODEL, k=10, exact=True)]


def record_queries(count: int, seed: int = 5) -> np.ndarray:
    """``count`` queries as users would send them: new vectors, not stored ones."""
    queries = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    SearchQuerySample.objects.bulk_create(SearchQuerySample(model=MODEL, vector=q) for q in queries)
    return queries


def test_recording_keeps_a_sample_of_the_newest_queries(settings):
    settings.SEARCH_TUNE_SAMPLE_PERCENT = 100
    settings.SEARCH_TUNE_QUERIES = 50
    vectors = np.random.default_rng(1).standard_normal((60, DIM)).astype(np.float32)
    for vector in vectors:
        assert search_queries_record(model=MODEL, vectors=[vector]) == 1
    kept = list(SearchQuerySample.objects.filter(model=MODEL).order_by("id"))
    assert len(kept) == 50 and np.allclose(np.asarray(kept[0].vector), vectors[10])  # the oldest 10 dropped
    settings.SEARCH_TUNE_SAMPLE_PERCENT = 0
    assert search_queries_record(model=MODEL, vectors=list(vectors)) == 0
    settings.SEARCH_TUNE_SAMPLE_PERCENT = 50
    kept = sum(search_queries_record(model=MODEL, vectors=list(vectors)) for _ in range(10))
    assert 200 < kept < 400  # about half of 600
    assert SearchQuerySample.objects.filter(model=MODEL).count() == 50


def test_tuning_picks_the_smallest_ef_search_reaching_the_target(vectors):
    record_queries(60)
    tuning = search_tune(model=MODEL, target_recall=1.0, queries=40)
    tried = [step["ef_search"] for step in tuning.steps]
    assert tried == list(EF_SEARCH_LADDER[: len(tried)])
    assert all(0 <= step["recall_low"] <= step["recall"] <= 1 and step["p50_ms"] > 0 for step in tuning.steps)
    # Short of perfect, the estimate's margin is below the mean: a value needs more than the target on average.
    assert all(step["recall_low"] < step["recall"] for step in tuning.steps if step["recall"] < 1)
    # Every value tried before the chosen one fell short; the search stopped at the first to reach it.
    assert all(step["recall_low"] < 1.0 for step in tuning.steps[:-1])
    assert tuning.ef_search == tried[-1] and tuning.recall == tuning.steps[-1]["recall"]
    assert tuning.steps[0]["recall"] < 1.0, "random vectors at ef_search 40 should miss some neighbours"
    assert (tuning.vectors, tuning.queries, tuning.target_recall) == (COUNT, 40, 1.0)  # the newest 40
    assert SearchTuning.objects.get(model=MODEL).ef_search == tuning.ef_search


def test_recall_is_one_where_every_search_is_exact(vectors, settings):
    """So few vectors that the planner scans them all: the first value is perfect (a recall
    measured against the wrong truth would not be 1)."""
    settings.SEARCH_EXACT_MAX_ROWS = 10_000
    record_queries(30)
    tuning = search_tune(model=MODEL, target_recall=1.0, queries=30)
    assert tuning.steps == [{"ef_search": 40, "recall": 1.0, "recall_low": 1.0, "p50_ms": tuning.steps[0]["p50_ms"]}]


def test_searches_run_with_the_tuned_value(vectors, settings):
    settings.SEARCH_EXACT_MAX_ROWS = 200
    untuned = ef_search_for(MODEL)
    assert untuned == EF_SEARCH_BY_SIZE[0][1]
    SearchTuning.objects.create(model=MODEL, ef_search=120, recall=0.97, target_recall=0.95, vectors=COUNT,
                                queries=100)  # fmt: skip
    search_caches_forget()
    assert ef_search_for(MODEL) == 120 and ef_search_for(MODEL, filtered=True) == 240
    settings_sent = []

    def spy(execute, sql, params, many, context):
        if "set_config" in sql:
            settings_sent.append(dict(zip(params[::2], params[1::2], strict=True)))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        items_similar_to(vector=vectors[0], model=MODEL, k=10)
    assert settings_sent[0]["hnsw.ef_search"] == "120"
    # The index has since grown past a quarter more than it was tuned on: the size's value,
    # never below the outgrown tuning.
    SearchTuning.objects.filter(model=MODEL).update(vectors=COUNT // 2, ef_search=60)
    search_caches_forget()
    assert ef_search_for(MODEL) == untuned
    SearchTuning.objects.filter(model=MODEL).update(ef_search=240)
    search_caches_forget()
    assert ef_search_for(MODEL) == 240
    settings.SEARCH_HNSW_EF_SEARCH = 50  # a fixed setting wins
    assert ef_search_for(MODEL) == 50


def test_periodic_tuning_runs_when_the_index_changed_size(vectors, settings):
    settings.SEARCH_TUNE_MIN_VECTORS = 1000
    settings.SEARCH_TUNE_QUERIES = 50
    record_queries(49)
    assert search_tune_due() == {}  # too few queries recorded yet: the size rule holds
    record_queries(1, seed=6)
    assert search_tune_due() == {MODEL: SearchTuning.objects.get(model=MODEL).ef_search}
    assert search_tune_due() == {}  # the same size: nothing to do
    SearchTuning.objects.filter(model=MODEL).update(vectors=COUNT * 2)  # the index shrank by half since
    assert MODEL in search_tune_due()
    assert SearchTuning.objects.get(model=MODEL).vectors == COUNT
    settings.SEARCH_TUNE_QUERIES = 200
    record_queries(49, seed=7)
    assert search_tune_due() == {}  # 99 recorded: not yet twice the 50 it was tuned on
    record_queries(1, seed=8)
    assert MODEL in search_tune_due()  # 100: a closer estimate
    assert SearchTuning.objects.get(model=MODEL).queries == 100
    SearchTuning.objects.filter(model=MODEL).update(vectors=COUNT * 2)
    settings.SEARCH_TUNE_MIN_VECTORS = COUNT + 1  # too small to bother
    assert search_tune_due() == {}
    settings.SEARCH_TUNE_MIN_VECTORS = 1000
    settings.SEARCH_HNSW_EF_SEARCH = 100  # fixed by the operator
    assert search_tune_due() == {}


def test_a_model_without_an_index_or_a_bad_target_is_refused(vectors):
    with pytest.raises(ServiceError) as refused:
        search_tune(model="resnet50")
    assert refused.value.code == "no_index" and refused.value.status_code == 409
    with pytest.raises(ServiceError) as refused:
        search_tune(model=MODEL, target_recall=1.5)
    assert refused.value.code == "invalid_recall"
    record_queries(49)
    with pytest.raises(ServiceError) as refused:
        search_tune(model=MODEL)
    assert refused.value.code == "too_few_queries" and "49 recorded" in refused.value.message
    with connection.cursor() as cursor:
        cursor.execute(hnsw_index_sql("resnet50", 2048))  # an index, and not one vector in it
    SearchQuerySample.objects.bulk_create(SearchQuerySample(model="resnet50", vector=np.ones(2048)) for _ in range(50))
    with pytest.raises(ServiceError) as refused:
        search_tune(model="resnet50")
    assert refused.value.code == "no_vectors" and refused.value.status_code == 409
    with pytest.raises(ServiceError) as refused:
        search_tune(model="no-such-model")
    assert refused.value.code == "unknown_model"


def test_command_prints_what_it_measured(vectors, capsys):
    record_queries(20)
    call_command("tune_search", "--model", MODEL, "--queries", "20", "--recall", "0.5")
    out = capsys.readouterr().out
    tuning = SearchTuning.objects.get(model=MODEL)
    assert f"now run with hnsw.ef_search {tuning.ef_search}" in out and "recall@10" in out
    first = tuning.steps[0]
    assert f"{first['ef_search']:>9} {first['recall']:>9.3f} {first['recall_low']:>8.3f}" in out
    with pytest.raises(CommandError, match="no search index"):
        call_command("tune_search", "--model", "resnet50")


def test_beat_runs_the_periodic_tuning(settings):
    from simsite.celery import app

    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "search.tasks.search_tune_due")
    assert entry["schedule"] == settings.SEARCH_TUNE_INTERVAL_SECONDS
    app.loader.import_default_modules()
    assert "search.tasks.search_tune_due" in app.tasks


def test_admin_lists_tunings_and_deleting_one_falls_back_to_the_size(vectors, admin_client):
    tuning = SearchTuning.objects.create(model=MODEL, ef_search=240, recall=0.96, target_recall=0.95, vectors=COUNT,
                                         queries=200)  # fmt: skip
    page = admin_client.get("/admin/search/searchtuning/")
    assert page.status_code == 200 and MODEL in page.content.decode() and "240" in page.content.decode()
    assert admin_client.get("/admin/search/searchtuning/add/").status_code == 403
    search_caches_forget()
    assert ef_search_for(MODEL) == 240
    response = admin_client.post(f"/admin/search/searchtuning/{tuning.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not SearchTuning.objects.exists()
    search_caches_forget()
    assert ef_search_for(MODEL) == EF_SEARCH_BY_SIZE[0][1]
