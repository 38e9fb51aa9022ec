"""Background work that always ends, races that leave the right data, and the reconciler.

In-process, on real PostgreSQL and the real broker, with a fake embedder (the model is not
what is tested). The same paths with real worker processes: test_workers_reliability.py.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import redis
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from catalog.images import image_validate
from catalog.models import Product
from catalog.services import product_create, product_delete, product_update
from search.models import (
    ActiveModel,
    Embedding,
    EmbeddingFailure,
    IndexBatch,
    IndexJob,
    SearchTuning,
    TrainedModel,
    hnsw_index_name,
)
from search.services.activation import active_model_set, embedding_index_ensure
from search.services.indexing import index_batch_run, index_job_create, items_index
from search.services.reconciler import index_reconcile
from search.services.trained_models import trained_model_delete
from search.tasks import embed_batch
from simsite.celery import app, queue_length
from simsite.errors import ServiceError
from tests import images
from tests.factories import IndexJobFactory, ProductImportFactory, TrainedModelFactory
from tests.search.helpers import FakeEmbedder, add_gallery_image, add_product

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def empty_queues():
    app.control.purge()
    yield
    app.control.purge()


@pytest.fixture
def broker_down(monkeypatch):
    """Publishing fails as it does when Redis is unreachable."""

    def refuse(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(app, "send_task", refuse)


def _job_of(batch_id: int) -> IndexJob:
    return IndexBatch.objects.select_related("job").get(pk=batch_id).job


def test_an_unexpected_exception_fails_its_batch_and_the_job_ends(fake_embedder, settings):
    settings.EMBEDDING_BATCH_SIZE = 2
    images_ = [add_gallery_image(images.png_bytes(seed=i), f"{i}.png") for i in range(4)]
    job = items_index(gallery_ids=[image.pk for image in images_])
    first, second = IndexBatch.objects.filter(job=job).order_by("number")
    fake_embedder.fail = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    embed_batch.apply(args=[first.pk])  # the task wrapper, as a worker runs it
    fake_embedder.fail = None
    embed_batch.apply(args=[second.pk])
    job.refresh_from_db()
    assert (job.state, job.done, job.failed) == ("succeeded", 2, 2)
    first.refresh_from_db()
    assert first.done and all("CUDA out of memory" in f["error"] for f in first.failures)
    assert EmbeddingFailure.objects.filter(model=job.model).count() == 2

    # Every batch failing: the job ends as failed, never "running" for ever.
    fake_embedder.fail = TimeoutError("soft time limit exceeded")
    other = add_gallery_image(images.png_bytes(seed=9), "9.png")
    job = items_index(gallery_ids=[other.pk])
    embed_batch.apply(args=[IndexBatch.objects.get(job=job).pk])
    job.refresh_from_db()
    assert (job.state, job.failed) == ("failed", 1) and job.finished_at is not None


def test_a_batch_delivered_past_the_attempt_limit_fails_without_running(fake_embedder, settings):
    settings.EMBEDDING_BATCH_MAX_ATTEMPTS = 3
    image = add_gallery_image(images.png_bytes(seed=1), "1.png")
    job = items_index(gallery_ids=[image.pk])
    batch = IndexBatch.objects.get(job=job)
    IndexBatch.objects.filter(pk=batch.pk).update(attempts=3)  # three workers died on it
    fake_embedder.before_embed = lambda: pytest.fail("a batch over its attempts must not run again")
    index_batch_run(batch_id=batch.pk)
    job.refresh_from_db()
    batch.refresh_from_db()
    assert (job.state, job.failed, batch.attempts) == ("failed", 1, 4)
    assert "given up after 3 attempts" in batch.failures[0]["error"]


def test_a_database_error_that_is_a_bug_fails_the_batch_rather_than_being_retried(monkeypatch):
    # Vectors of the wrong dimension (a bug): the model's HNSW index refuses them with a
    # DataError, on every try alike. Only a lost connection or a restarting server is retried.
    monkeypatch.setattr("search.embedders.get_embedder", lambda key: FakeEmbedder(dim=64))
    image = add_gallery_image(images.png_bytes(seed=11), "11.png")
    job = items_index(gallery_ids=[image.pk])
    batch = IndexBatch.objects.get(job=job)
    result = embed_batch.apply(args=[batch.pk])
    batch.refresh_from_db()
    job.refresh_from_db()
    assert result.state == "SUCCESS"  # not RETRY: the task ended
    assert batch.attempts == 1 and batch.done and "DataError" in batch.failures[0]["error"]
    assert (job.state, job.failed) == ("failed", 1)


def test_a_late_vector_of_the_old_image_never_overwrites_the_new_one(fake_embedder):
    old, new = images.jpeg_bytes(seed=1), images.jpeg_bytes(seed=2)
    product = add_product(old, "S1")
    old_job = items_index(product_ids=[product.pk])
    old_batch = IndexBatch.objects.get(job=old_job)

    def image_changes_while_the_old_batch_computes() -> None:
        fake_embedder.before_embed = None
        product_update(product=Product.objects.get(pk=product.pk), image=image_validate(data=new, filename="n.jpg"))
        new_batch = IndexBatch.objects.filter(done=False).exclude(pk=old_batch.pk).get()
        index_batch_run(batch_id=new_batch.pk)  # the new image's vector commits first

    fake_embedder.before_embed = image_changes_while_the_old_batch_computes
    index_batch_run(batch_id=old_batch.pk)  # ...then the old batch tries to commit
    stored = Embedding.objects.get(product=product)
    assert stored.sha256 == Product.objects.get(pk=product.pk).sha256
    assert np.allclose(stored.vector, FakeEmbedder().embed_bytes([new])[0], atol=1e-6)
    assert IndexBatch.objects.filter(done=False).count() == 0


def test_a_shared_file_is_not_deleted_while_another_row_is_being_created_with_it(media_root):
    data = images.png_bytes(seed=5)
    first = product_create(sku="A", name="A", category="x", price="1.00", image=image_validate(data=data),
                           notify=False)  # fmt: skip
    stored = media_root / first.image.name
    created, committed_at, deleted_at = threading.Event(), [], []

    def create_second() -> None:  # holds its transaction open a while after storing the file
        try:
            with transaction.atomic():
                product_create(sku="B", name="B", category="x", price="1.00", image=image_validate(data=data),
                               notify=False)  # fmt: skip
                created.set()
                time.sleep(1.0)
                # Taken as it commits: once it has, the waiting delete may finish before this
                # thread runs again, so a time taken after the block could come later than it.
                committed_at.append(time.monotonic())
        finally:
            connection.close()

    def delete_first() -> None:
        try:
            created.wait(10)
            product_delete(product=Product.objects.get(sku="A"))
            deleted_at.append(time.monotonic())
        finally:
            connection.close()

    threads = [threading.Thread(target=create_second), threading.Thread(target=delete_first)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert committed_at and deleted_at and deleted_at[0] >= committed_at[0]  # the delete waited
    assert stored.exists(), "the file of product B was deleted"
    assert Product.objects.get(sku="B").image.name == first.image.name
    product_delete(product=Product.objects.get(sku="B"))
    assert not stored.exists()  # the last user gone, the file goes


def test_work_queued_while_the_broker_is_down_is_sent_by_the_reconciler(fake_embedder, broker_down, monkeypatch):
    product = product_create(sku="P", name="P", category="x", price="1.00", image=image_validate(
        data=images.png_bytes(seed=3)))  # fmt: skip
    batch = IndexBatch.objects.get(product_ids=[product.pk])
    assert batch.dispatched_at is None  # the row committed, the message could not be sent
    monkeypatch.undo()  # the broker is back
    assert index_reconcile()["resent"] == 0  # within the grace period: an on-commit send may be under way
    IndexBatch.objects.filter(pk=batch.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    assert index_reconcile()["resent"] == 1
    batch.refresh_from_db()
    assert batch.dispatched_at is not None and queue_length("embed") == 1


def test_a_lost_message_is_sent_again_once_its_queue_is_empty(fake_embedder, settings):
    image = add_gallery_image(images.png_bytes(seed=4), "4.png")
    job = items_index(gallery_ids=[image.pk])
    batch = IndexBatch.objects.get(job=job)
    app.control.purge()  # Redis restarted without its data: the message is gone
    IndexBatch.objects.filter(pk=batch.pk).update(dispatched_at=timezone.now() - timedelta(minutes=5))
    assert queue_length("embed") == 0
    assert index_reconcile()["resent"] == 1
    assert queue_length("embed") == 1
    index_batch_run(batch_id=batch.pk)
    assert _job_of(batch.pk).state == "succeeded"


def test_a_stalled_job_is_ended_with_its_items_failed(fake_embedder, settings):
    settings.INDEX_JOB_STALL_SECONDS = 60
    image = add_gallery_image(images.png_bytes(seed=6), "6.png")
    job = items_index(gallery_ids=[image.pk])
    IndexJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    IndexBatch.objects.filter(job=job).update(attempts=1, started_at=timezone.now())
    report = index_reconcile()
    job.refresh_from_db()
    assert report["stalled"] == 1 and job.state == "failed" and job.failed == 1
    assert "no progress" in IndexBatch.objects.get(job=job).failures[0]["error"]


def test_the_sweep_embeds_what_lacks_a_vector_but_not_a_file_known_to_fail(fake_embedder, media_root):
    missing = add_gallery_image(images.png_bytes(seed=7), "7.png")  # never queued (a lost signal)
    broken = add_gallery_image(images.png_bytes(seed=8), "8.png")
    (media_root / broken.file.name).write_bytes(b"garbage")
    assert index_reconcile()["swept"] == 2
    for batch in IndexBatch.objects.filter(done=False):
        index_batch_run(batch_id=batch.pk)
    assert Embedding.objects.filter(gallery_image=missing).exists()
    assert EmbeddingFailure.objects.filter(gallery_image=broken).exists()
    assert index_reconcile()["swept"] == 0  # the broken file is not retried every run
    # Items on their way (a pending batch) are not queued twice.
    pending = add_gallery_image(images.png_bytes(seed=10), "10.png")
    items_index(gallery_ids=[pending.pk])
    assert index_reconcile()["swept"] == 0


def test_old_jobs_and_imports_are_pruned(settings):
    from catalog.models import ProductImport

    settings.JOB_RETENTION_DAYS = 30
    long_ago = timezone.now() - timedelta(days=31)
    old = IndexJobFactory(state="succeeded", finished_at=long_ago)
    recent = IndexJobFactory(state="succeeded", finished_at=timezone.now())
    name = default_storage.save("imports/old.csv", __import__("io").BytesIO(b"id\n"))
    ProductImportFactory(file=name, filename="old.csv", state="succeeded", finished_at=long_ago)
    assert index_reconcile()["pruned"] == 2
    assert not IndexJob.objects.filter(pk=old.pk).exists() and IndexJob.objects.filter(pk=recent.pk).exists()
    assert not default_storage.exists(name) and not ProductImport.objects.exists()


def test_a_model_that_no_longer_exists_does_not_stop_the_reconciler(fake_embedder, caplog):
    covered = add_gallery_image(images.png_bytes(seed=12), "12.png")
    job = items_index(gallery_ids=[covered.pk])
    lost = timezone.now() - timedelta(minutes=1)
    IndexBatch.objects.filter(job=job).update(dispatched_at=None, created_at=lost)  # its message was lost
    add_gallery_image(images.png_bytes(seed=13), "13.png")  # never queued (a lost signal)
    # Trained models deleted while the active-model row and a queued job still name them.
    ActiveModel.objects.update_or_create(pk=1, defaults={"key": "deleted_active"})
    orphan_job = IndexJobFactory(model="deleted_job")
    IndexJob.objects.filter(pk=orphan_job.pk).update(created_at=lost)
    assert items_index(gallery_ids=[covered.pk]) is None  # uploads still go in, with the models that exist
    with caplog.at_level(logging.ERROR, logger="search.services.reconciler"):
        report = index_reconcile()
    assert (report["resent"], report["swept"]) == (1, 1)  # the other models' work was done
    orphan_job.refresh_from_db()
    assert orphan_job.state == "failed" and "deleted_job" in orphan_job.error
    failed = {record.getMessage() for record in caplog.records if record.exc_info}
    assert {"reconcile: the vector index of model deleted_active failed", "reconcile: the sweep of model "
            "deleted_active failed", f"reconcile: planning job {orphan_job.pk} failed"} <= failed  # fmt: skip
    assert report["errors"] == len(failed)
    assert not IndexJob.objects.filter(model="deleted_active").exists()  # nothing queued for a model that is gone


def _in_open_transaction(work: Callable[[], object]) -> threading.Thread:
    """Run ``work`` in a transaction of another thread, kept open a second after it (a request
    under way); returns once ``work`` is done, the thread still in its transaction."""
    done = threading.Event()

    def run() -> None:
        try:
            with transaction.atomic():
                work()
                done.set()
                time.sleep(1.0)
        finally:
            done.set()
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    done.wait(30)
    return thread


@pytest.mark.parametrize(("race", "refusal"), [("activate", "model_active"), ("index", "model_indexing")])
def test_a_trained_model_is_not_deleted_while_it_is_being_activated_or_indexed(race, refusal):
    trained = TrainedModelFactory(key="racing", dim=64, status="succeeded", classes=["a", "b"])
    embedding_index_ensure(model="racing")  # built beforehand: the activation needs no build in its transaction
    try:
        work = {"activate": lambda: active_model_set(model="racing", force=True),
                "index": lambda: index_job_create(collection="all", model="racing")}[race]  # fmt: skip
        thread = _in_open_transaction(work)
        with pytest.raises(ServiceError) as refused:
            trained_model_delete(trained=trained)  # waits for the other transaction, then sees what it did
        thread.join(30)
        assert refused.value.code == refusal
        assert TrainedModel.objects.filter(key="racing").exists()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {hnsw_index_name('racing')}")


def test_an_invalid_index_left_by_a_failed_concurrent_build_is_rebuilt():
    name = hnsw_index_name("efficientnet_lite0")
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = '{name}'::regclass")
    SearchTuning.objects.create(model="efficientnet_lite0", ef_search=60, recall=1, target_recall=0.95, vectors=1,
                                queries=1)  # fmt: skip
    embedding_index_ensure(model="efficientnet_lite0")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT indisvalid FROM pg_index WHERE indexrelid = '{name}'::regclass")
        assert cursor.fetchone()[0] is True
    assert not SearchTuning.objects.exists()  # measured on the graph that was replaced
    # A model being built gets its index from the reconciler, whatever the migrations made.
    IndexJobFactory(model="resnet18", state="running")
    index_reconcile()
    with connection.cursor() as cursor:
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass", [hnsw_index_name("resnet18")])
        assert cursor.fetchone()[0] is True


def test_an_unknown_default_model_stops_the_process_with_a_message(child_env):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**child_env, "EMBEDDING_DEFAULT_MODEL": "vgg99"},
    )  # fmt: skip
    assert result.returncode != 0
    assert "EMBEDDING_DEFAULT_MODEL" in result.stderr and "efficientnet_lite0" in result.stderr


def test_clearing_the_cache_never_drops_queued_tasks():
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    app.send_task("search.tasks.reconcile")
    assert broker.llen("default") == 1
    cache.set("something", 1)
    cache.clear()
    assert broker.llen("default") == 1
    assert django_settings.CACHES["default"]["LOCATION"] != django_settings.CELERY_BROKER_URL


def test_lost_imports_are_sent_again_once_and_a_dead_runner_is_resumed(settings, tmp_path):
    from django.core.files import File

    from catalog.csv_import import product_import_create, product_import_run, product_imports_reconcile
    from catalog.models import ProductImport

    settings.CATALOG_IMPORT_ROOT = tmp_path
    (tmp_path / "a.png").write_bytes(images.png_bytes(seed=21))
    (tmp_path / "p.csv").write_text("id,name,category,price,image_url\nP1,A,x,1,a.png\nP2,B,x,2,a.png\n")
    with (tmp_path / "p.csv").open("rb") as handle:
        job = product_import_create(upload=File(handle, name="p.csv"), dispatch=False)  # its message never went
    assert product_imports_reconcile() == 0  # within the grace period
    ProductImport.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    assert product_imports_reconcile() == 1 and queue_length("default") == 1
    ProductImport.objects.filter(pk=job.pk).update(dispatched_at=timezone.now() - timedelta(minutes=1))
    assert product_imports_reconcile() == 0  # its message waits in the queue: not lost, not copied
    app.control.purge()  # ...until the queue loses it
    assert product_imports_reconcile() == 1

    # A runner that died after one row: its lease runs out, the import is sent again once
    # per lease period, and the next runner resumes after the recorded row.
    settings.CSV_IMPORT_LEASE_SECONDS = 60
    long_ago = timezone.now() - timedelta(minutes=5)
    ProductImport.objects.filter(pk=job.pk).update(state="running", done=1, total=2, lease_until=long_ago,
                                                   dispatched_at=long_ago)  # fmt: skip
    app.control.purge()
    assert product_imports_reconcile() == 1
    assert product_imports_reconcile() == 0  # sent within this lease period already
    product_import_run(import_id=job.pk)
    job.refresh_from_db()
    assert (job.state, job.done, job.created) == ("succeeded", 2, 1)
    assert list(Product.objects.values_list("sku", flat=True)) == ["P2"]  # row 2 only: row 1 was done


def test_a_restarted_worker_sends_again_the_batches_its_dead_predecessor_had_started(fake_embedder, settings):
    from search.services.indexing import _batch_begin, index_batches_resume
    from search.tasks import batch_received, resume_batches

    settings.EMBEDDING_BATCH_SIZE = 1
    added = [add_gallery_image(images.png_bytes(seed=i), f"{i}.png") for i in range(4)]
    job = items_index(gallery_ids=[image.pk for image in added])
    killed, finished, elsewhere, held = IndexBatch.objects.filter(job=job).order_by("number")
    _batch_begin(killed.pk, "w1@host")  # started, then the worker was SIGKILLed
    _batch_begin(finished.pk, "w1@host")
    index_batch_run(batch_id=finished.pk, worker="w1@host")
    _batch_begin(elsewhere.pk, "w2@host")  # another worker, alive
    request = type("Request", (), {"name": "search.tasks.embed_batch", "args": [held.pk], "hostname": "w1@host"})
    batch_received(sender=None, request=request())  # taken from the queue while another task ran
    app.control.purge()
    assert index_batches_resume(worker="") == 0
    sent = []
    original = app.send_task
    app.send_task = lambda name, args, **options: sent.append((name, args))
    try:
        resume_batches(sender=type("Consumer", (), {"hostname": "w1@host"})())
    finally:
        app.send_task = original
    assert sent == [("search.tasks.embed_batch", [killed.pk]), ("search.tasks.embed_batch", [held.pk])]
    assert IndexBatch.objects.get(pk=held.pk).attempts == 0
