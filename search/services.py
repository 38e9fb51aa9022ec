"""Writes for the search engine: index jobs and batches, vectors, the active model, and the
reconciler that makes lost messages, dead workers and stuck jobs harmless."""

from __future__ import annotations

import logging
import random
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from pgvector import Vector

from catalog.csv_import import product_imports_prune, product_imports_reconcile
from catalog.services import gallery_images_delete, products_delete
from search.datasets import CATALOG
from search.items import GALLERY_IMAGE, KINDS, PRODUCT, ItemRef, kinds_of
from search.models import (
    HNSW_BUILD_SETTING,
    ActiveModel,
    Collection,
    DuplicateDismissal,
    DuplicateDismissalItem,
    DuplicatePair,
    DuplicateScan,
    Embedding,
    EmbeddingFailure,
    IndexBatch,
    IndexJob,
    SearchQuerySample,
    SearchTuning,
    TrainedModel,
    hnsw_index_name,
    hnsw_index_sql,
)
from search.registry import MODELS, ModelSpec
from search.selectors import (
    TUNING_GROWTH,
    active_model_key,
    duplicate_neighbours_sql,
    duplicate_scan_latest,
    embedding_count,
    embedding_counts,
    embedding_stamp,
    exact_neighbours,
    items_by_ref,
    items_similar_to,
    model_coverage,
    model_spec_get,
    models_being_indexed,
    search_caches_forget,
    search_index_valid,
    search_query_sample_count,
    search_query_samples,
    search_tuning_get,
)
from simsite.celery import queue_length, task_send
from simsite.errors import ServiceError, failure_reason
from simsite.stored_files import orphan_files_sweep
from simsite.training_runs import training_run_execute, training_run_fail, training_run_touch, training_runs_reconcile

logger = logging.getLogger(__name__)

PLAN_TASK = "search.tasks.index_job_plan"
BATCH_TASK = "search.tasks.embed_batch"
# Work recorded less than this long ago may still be on its way to the broker (on_commit).
_GRACE = timedelta(seconds=10)


@contextmanager
def _session_lock(name: str) -> Iterator[bool]:
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


def embedding_index_ensure(*, model: str) -> None:
    """Make sure the model's HNSW index exists and is valid, building it without locking
    writers (CONCURRENTLY). An INVALID index left by a failed concurrent build is dropped
    and built again; a build under way in another process is left alone. Must run outside
    a transaction."""
    spec = model_spec_get(model)
    name = hnsw_index_name(spec.key)
    with _session_lock(f"hnsw-build:{spec.key}") as taken:
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


def _create_batches(job: IndexJob, *, product_ids: Sequence[int], gallery_ids: Sequence[int]) -> int:
    size = settings.EMBEDDING_BATCH_SIZE
    batches = [
        IndexBatch(job=job, number=n, product_ids=list(product_ids[i : i + size]))
        for n, i in enumerate(range(0, len(product_ids), size))
    ]
    offset = len(batches)
    batches += [
        IndexBatch(job=job, number=offset + n, gallery_ids=list(gallery_ids[i : i + size]))
        for n, i in enumerate(range(0, len(gallery_ids), size))
    ]
    IndexBatch.objects.bulk_create(batches)
    return len(product_ids) + len(gallery_ids)


def _batches_send(batch_ids: Sequence[int]) -> int:
    """Send batches to the embed queue, recording when; stops at the first broker failure
    (the reconciler sends the rest later). Returns how many were sent."""
    sent: list[int] = []
    for batch_id in batch_ids:
        if not task_send(BATCH_TASK, batch_id):
            break
        sent.append(batch_id)
    IndexBatch.objects.filter(pk__in=sent).update(dispatched_at=timezone.now())
    return len(sent)


def index_job_dispatch(*, job_id: int) -> int:
    """Send the job's batches that were never sent."""
    pending = IndexBatch.objects.filter(job_id=job_id, done=False, dispatched_at__isnull=True).order_by("number")
    return _batches_send(list(pending.values_list("pk", flat=True)))


def _model_lock(key: str) -> bool:
    """Lock the row of the model ``key`` until the transaction ends, if it was trained here, so
    that activating it, indexing it and deleting it happen one after the other: a check of one
    (``trained_model_delete``: not active, not being indexed) cannot pass while another is under
    way. Returns whether the model can be used (False: gone, or not trained yet). Must run
    inside a transaction."""
    if key in MODELS:
        return True
    status = TrainedModel.objects.select_for_update().filter(key=key).values_list("status", flat=True)
    return list(status) == [TrainedModel.Status.SUCCEEDED]


def _model_locked(key: str) -> ModelSpec:
    """The model ``key`` (``_model_lock``); raises ``unknown_model`` if it is gone."""
    _model_lock(key)
    return model_spec_get(key)


def _plan_dispatch(job_id: int) -> None:
    task_send(PLAN_TASK, job_id)


def index_job_create(
    *, collection: str, model: str | None = None, mode: str = IndexJob.Mode.MISSING, activate_when_done: bool = False
) -> IndexJob:
    """Queue a job that embeds a collection's items with ``model`` (default: the active one);
    with ``activate_when_done``, searches switch to the model when the job succeeds (until
    then they keep using the active model: no downtime)."""
    if collection not in Collection.values:
        raise ServiceError("invalid_collection", f"collection must be one of {Collection.values}.", field="collection")
    if mode not in IndexJob.Mode.values:
        raise ServiceError("invalid_mode", f"mode must be one of {IndexJob.Mode.values}.", field="mode")
    key = model_spec_get(model or active_model_key()).key
    with transaction.atomic():
        _model_locked(key)  # a delete of this model waits, then sees the job (or this finds it gone)
        job = IndexJob.objects.create(collection=collection, model=key, mode=mode,
                                      activate_when_done=activate_when_done)  # fmt: skip
        transaction.on_commit(lambda: _plan_dispatch(job.pk), robust=True)
    return job


def _jobs_for_items(
    model: str, product_ids: Sequence[int], gallery_ids: Sequence[int], mode: str = IndexJob.Mode.MISSING
) -> IndexJob:
    collection = Collection.PRODUCTS if not gallery_ids else Collection.GALLERY if not product_ids else Collection.ALL
    job = IndexJob.objects.create(collection=collection, model=model, mode=mode)
    job.total = _create_batches(job, product_ids=list(product_ids), gallery_ids=list(gallery_ids))
    job.save(update_fields=["total"])
    transaction.on_commit(lambda: index_job_dispatch(job_id=job.pk), robust=True)
    return job


def items_index(
    *, product_ids: Sequence[int] = (), gallery_ids: Sequence[int] = (), mode: str = IndexJob.Mode.MISSING
) -> IndexJob | None:
    """Embed these new or changed items in the background, with every model in use (``mode``
    "all": again, even where their vectors are current - the admin's *Reindex selected*).

    The jobs and batches commit with the caller's transaction; their messages are sent after
    the commit, and if the broker is down the reconciler sends them later. Returns the job
    for the active model (the one searches wait for).
    """
    if not product_ids and not gallery_ids:
        return None
    active = active_model_key()
    result = None
    with transaction.atomic():
        for key in sorted(models_being_indexed()):
            if not _model_lock(key):  # a trained model deleted while a job or the active-model row names it
                logger.warning("%s items not indexed with model %s: it no longer exists",
                               len(product_ids) + len(gallery_ids), key)  # fmt: skip
                continue
            job = _jobs_for_items(key, product_ids, gallery_ids, mode)
            if key == active:
                result = job
    return result


def index_job_plan(*, job_id: int) -> None:
    """Enumerate a queued job's items into batches and send them to the embed queue."""
    job = IndexJob.objects.filter(pk=job_id, state=IndexJob.State.QUEUED, total=0, batches__isnull=True).first()
    if job is None:
        return
    try:
        embedding_index_ensure(model=job.model)
    except Exception as error:
        index_job_fail(job_id=job_id, error=f"could not create the vector index: {failure_reason(error)}")
        raise
    ids: dict[str, list[int]] = {name: [] for name in KINDS}
    for kind in kinds_of(job.collection):
        items = kind.model.objects.order_by("pk")
        if job.mode == IndexJob.Mode.MISSING:
            current = Embedding.objects.filter(model=job.model, sha256=F(f"{kind.name}__sha256"))
            items = items.exclude(pk__in=current.values(kind.name))
        ids[kind.name] = list(items.values_list("pk", flat=True))
    with transaction.atomic():
        job = IndexJob.objects.select_for_update().get(pk=job_id)
        if job.state != IndexJob.State.QUEUED or job.batches.exists():
            return
        job.total = _create_batches(job, product_ids=ids["product"], gallery_ids=ids["gallery_image"])
        job.state = IndexJob.State.RUNNING if job.total else IndexJob.State.SUCCEEDED
        job.started_at = timezone.now()
        if not job.total:
            job.finished_at = job.started_at
        job.save()
        if not job.total:
            _activate_if_asked(job)
        transaction.on_commit(lambda: index_job_dispatch(job_id=job_id), robust=True)


def index_job_cancel(*, job: IndexJob) -> IndexJob:
    updated = IndexJob.objects.filter(pk=job.pk, state__in=[IndexJob.State.QUEUED, IndexJob.State.RUNNING]).update(
        state=IndexJob.State.CANCELLED, finished_at=timezone.now()
    )
    job.refresh_from_db()
    if not updated and job.state != IndexJob.State.CANCELLED:
        raise ServiceError("job_finished", f"Job {job.pk} has already {job.state}.", status_code=409)
    return job


def index_job_fail(*, job_id: int, error: str) -> None:
    """End a job as failed (a problem no retry fixes, such as missing weights)."""
    IndexJob.objects.filter(pk=job_id).exclude(state__in=IndexJob.TERMINAL).update(
        state=IndexJob.State.FAILED, error=error[:2000], finished_at=timezone.now()
    )


def index_batch_job_fail(*, batch_id: int, error: str) -> None:
    """End the job of a batch as failed (the batch met a problem no retry fixes)."""
    job_id = IndexBatch.objects.filter(pk=batch_id).values_list("job_id", flat=True).first()
    if job_id:
        index_job_fail(job_id=job_id, error=error)


def _job_settle(job_id: int) -> None:
    """End a running job whose batches are all done: succeeded, or failed if nothing was
    embedded and something failed."""
    if IndexBatch.objects.filter(job_id=job_id, done=False).exists():
        return
    now = timezone.now()
    running = IndexJob.objects.filter(pk=job_id, state__in=[IndexJob.State.QUEUED, IndexJob.State.RUNNING])
    with transaction.atomic():
        if running.filter(Q(done__gt=0) | Q(failed=0)).update(state=IndexJob.State.SUCCEEDED, finished_at=now):
            _activate_if_asked(IndexJob.objects.get(pk=job_id))
    running.filter(done=0, failed__gt=0).update(
        state=IndexJob.State.FAILED, finished_at=now, error="every item failed; see the failures"
    )


def _activate_if_asked(job: IndexJob) -> None:
    """A job that was to switch searches to its model, now succeeded: switch (items that
    failed have no vector, which the job lists)."""
    if job.activate_when_done:
        active_model_set(model=job.model, force=True)
        logger.info("index job %s done: %s is now the active model", job.pk, job.model)


def _load(item: object, kind_name: str) -> bytes:
    field = KINDS[kind_name].file_of(item)
    with default_storage.open(field.name, "rb") as handle:
        return handle.read()


def _batch_begin(batch_id: int) -> tuple[IndexBatch | None, bool]:
    """Count a delivery of the batch; (batch, over the attempt limit), or (None, _) if there
    is nothing to do (gone, done, or its job ended)."""
    with transaction.atomic():
        batch = IndexBatch.objects.select_for_update().select_related("job").filter(pk=batch_id).first()
        if batch is None or batch.done or batch.job.state in IndexJob.TERMINAL:
            return None, False
        batch.attempts += 1
        batch.started_at = timezone.now()
        batch.save(update_fields=["attempts", "started_at"])
    IndexJob.objects.filter(pk=batch.job_id, state=IndexJob.State.QUEUED).update(
        state=IndexJob.State.RUNNING, started_at=timezone.now()
    )
    return batch, batch.attempts > settings.EMBEDDING_BATCH_MAX_ATTEMPTS


def index_batch_run(*, batch_id: int) -> None:
    """Embed one batch and record it, exactly once however often it is delivered.

    Items whose current image already has a vector for the model are skipped (mode
    ``missing``); items that cannot be decoded fail alone. The vectors, the batch's ``done``
    flag and the job's counters commit together. A batch delivered more than
    ``EMBEDDING_BATCH_MAX_ATTEMPTS`` times (its worker died each time) fails its items.
    """
    from search.embedders import get_embedder  # torch stays out of the web process until needed

    batch, over_limit = _batch_begin(batch_id)
    if batch is None:
        return
    if over_limit:
        index_batch_fail(
            batch_id=batch_id,
            error=f"given up after {settings.EMBEDDING_BATCH_MAX_ATTEMPTS} attempts: the worker stopped each time "
            "(out of memory or killed?)",
        )
        return
    job = batch.job
    embedder = get_embedder(model_spec_get(job.model))
    items: list[tuple[str, object]] = [
        (kind.name, item)
        for kind in KINDS.values()
        for item in kind.model.objects.filter(pk__in=batch.ids_of(kind.name))
    ]
    if job.mode == IndexJob.Mode.MISSING:
        existing = Embedding.objects.filter(model=job.model).filter(
            Q(product__in=batch.product_ids) | Q(gallery_image__in=batch.gallery_ids)
        )
        current = {
            ItemRef.from_columns(product, gallery): sha256
            for product, gallery, sha256 in existing.values_list("product_id", "gallery_image_id", "sha256")
        }
        items = [(kind, item) for kind, item in items if current.get(ItemRef(kind, item.pk)) != item.sha256]

    def load(entry: tuple[str, object]) -> bytes | Exception:
        try:
            return _load(entry[1], entry[0])
        except Exception as error:  # noqa: BLE001 - a missing file fails its item, not the job
            return error

    threads = settings.EMBEDDING_DECODE_THREADS
    with ThreadPoolExecutor(max_workers=threads) as pool:
        loaded = list(pool.map(load, items))
    readable = [i for i, data in enumerate(loaded) if not isinstance(data, Exception)]
    # Decoding, resizing and the forward pass: on CUDA, JPEGs are decoded on the GPU.
    outcome: list[object] = list(loaded)
    for i, result in zip(readable, embedder.embed_encoded([loaded[i] for i in readable], threads=threads),
                         strict=True):  # fmt: skip
        outcome[i] = result
    failed = [(entry, failure_reason(result)) for entry, result in zip(items, outcome, strict=True)
              if isinstance(result, Exception)]  # fmt: skip
    rows = [
        Embedding(**{kind: item}, model=job.model, vector=vector, sha256=item.sha256)
        for (kind, item), vector in zip(items, outcome, strict=True)
        if not isinstance(vector, Exception)
    ]
    with transaction.atomic():
        locked = IndexBatch.objects.select_for_update().filter(pk=batch_id, done=False).first()
        if locked is None:
            return  # another delivery of this batch got here first
        embedding_upsert(rows=rows)
        _batch_finish(locked, [(ItemRef(kind, item.pk), item.sha256, error) for (kind, item), error in failed])


def _batch_finish(batch: IndexBatch, failures: list[tuple[ItemRef, str, str]]) -> None:
    """Mark a locked batch done with its failures and count it in its job (in a transaction)."""
    batch.done = True
    batch.failures = [{"type": ref.kind, "id": ref.id, "error": error} for ref, _, error in failures]
    batch.save(update_fields=["done", "failures"])
    for ref, sha256, error in failures:
        EmbeddingFailure.objects.update_or_create(
            **{ref.kind + "_id": ref.id, "model": batch.job.model},
            defaults={"sha256": sha256, "error": error[:500]},
        )
    IndexJob.objects.filter(pk=batch.job_id).update(
        done=F("done") + batch.size - len(failures), failed=F("failed") + len(failures), progressed_at=timezone.now()
    )
    _job_settle(batch.job_id)


def index_batch_fail(*, batch_id: int, error: str) -> None:
    """Fail every item of a batch that cannot be embedded (an unexpected exception, a time
    limit, a worker that keeps dying); its job moves on and ends."""
    with transaction.atomic():
        batch = IndexBatch.objects.select_for_update().select_related("job").filter(pk=batch_id, done=False).first()
        if batch is None:
            return
        shas = {}
        for kind in KINDS.values():
            for pk, sha256 in kind.model.objects.filter(pk__in=batch.ids_of(kind.name)).values_list("pk", "sha256"):
                shas[ItemRef(kind.name, pk)] = sha256
        refs = [ItemRef(kind, pk) for kind in KINDS for pk in batch.ids_of(kind)]
        failures = [(ref, shas[ref], error) for ref in refs if ref in shas]
        deleted = len(refs) - len(failures)
        _batch_finish(batch, failures)
        if deleted:  # items deleted meanwhile count as done, as in a normal run
            logger.info("batch %s: %s items were deleted before they failed", batch_id, deleted)


def embedding_upsert(*, rows: Sequence[Embedding]) -> int:
    """Insert or replace vectors, keyed by (item, model), for items whose image is still the
    one embedded. The items' rows are locked while writing, so a vector of an old image that
    arrives after the new image's vector is dropped rather than written over it. Returns the
    number of vectors written. Must run inside a transaction."""
    written = 0
    for kind in KINDS.values():
        subset = [row for row in rows if getattr(row, kind.column) is not None]
        if not subset:
            continue
        ids = sorted({getattr(row, kind.column) for row in subset})
        locked = kind.model.objects.filter(pk__in=ids).order_by("pk").select_for_update(no_key=True)
        current = dict(locked.values_list("pk", "sha256"))
        fresh = [row for row in subset if current.get(getattr(row, kind.column)) == row.sha256]
        if fresh:
            Embedding.objects.bulk_create(
                fresh, update_conflicts=True, unique_fields=[kind.name, "model"], update_fields=["vector", "sha256"]
            )
            model = fresh[0].model
            EmbeddingFailure.objects.filter(
                model=model, **{f"{kind.column}__in": [getattr(r, kind.column) for r in fresh]}
            ).delete()
        written += len(fresh)
    return written


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
        _model_locked(key)  # a delete of this model waits, then sees it active (or this finds it gone)
        ActiveModel.objects.update_or_create(pk=1, defaults={"key": key})
    search_caches_forget()  # searches of this process read the switch at once
    return key


def _sweep(model: str) -> int:
    """Queue items that lack a current vector of ``model`` and are not on their way to one.
    Raises ``unknown_model`` for a model that is gone (a deleted trained model still named by a
    job): nothing could embed its items, and its jobs would fail and be queued again each run."""
    model_spec_get(model)
    limit = settings.RECONCILE_SWEEP_LIMIT
    live = IndexJob.objects.filter(model=model).exclude(state__in=IndexJob.TERMINAL)
    if live.filter(batches__isnull=True).exists():
        return 0  # a job is being planned: it will cover these items
    pending = IndexBatch.objects.filter(job__in=live, done=False).values_list("product_ids", "gallery_ids")
    covered: dict[str, set[int]] = {name: set() for name in KINDS}
    for product_ids, gallery_ids in pending:
        covered["product"].update(product_ids)
        covered["gallery_image"].update(gallery_ids)
    missing: dict[str, list[int]] = {}
    for kind in KINDS.values():
        current = Embedding.objects.filter(model=model, sha256=F(f"{kind.name}__sha256")).values(kind.name)
        failed = EmbeddingFailure.objects.filter(model=model, sha256=F(f"{kind.name}__sha256")).values(kind.name)
        ids = (
            kind.model.objects.exclude(pk__in=current)
            .exclude(pk__in=failed)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        missing[kind.name] = [pk for pk in ids[: limit + len(covered[kind.name])] if pk not in covered[kind.name]][
            :limit
        ]
    if not missing["product"] and not missing["gallery_image"]:
        return 0
    with transaction.atomic():
        _model_locked(model)
        _jobs_for_items(model, missing["product"], missing["gallery_image"])
    return len(missing["product"]) + len(missing["gallery_image"])


def index_reconcile() -> dict[str, int]:
    """The periodic sweep (Celery beat, every RECONCILE_INTERVAL_SECONDS) that makes lost
    messages, dead workers and stuck jobs harmless. Safe to run at any time, twice at once
    included (one run at a time; the other returns at once)."""
    with _session_lock("search-reconcile") as taken:
        if not taken:
            return {}
        return _reconcile()


@contextmanager
def _isolated(report: dict[str, int], what: str, *args: object) -> Iterator[None]:
    """Run one step of the reconciler, or one model's or job's part of it, on its own: a
    failure is logged with its exception and counted in ``errors``, and the run goes on (one
    bad row, such as a model that no longer exists, must not stop every run for ever)."""
    try:
        yield
    except Exception:  # noqa: BLE001 - whatever it is, the other steps must still run
        logger.exception("reconcile: %s failed", what % args)
        report["errors"] += 1


def _reconcile() -> dict[str, int]:
    now = timezone.now()
    report = dict.fromkeys(["planned", "resent", "stalled", "swept", "pruned", "imports_resent", "training_resent",
                            "training_stalled", "orphans", "errors"], 0)  # fmt: skip
    models: list[str] = []
    with _isolated(report, "listing the models in use"):
        models = sorted(models_being_indexed())
    for key in models:
        with _isolated(report, "the vector index of model %s", key):
            embedding_index_ensure(model=key)
    with _isolated(report, "planning jobs"):
        unplanned = IndexJob.objects.filter(
            state=IndexJob.State.QUEUED, total=0, batches__isnull=True, created_at__lt=now - _GRACE
        )
        for job_id in unplanned.values_list("pk", flat=True):
            with _isolated(report, "planning job %s", job_id):
                index_job_plan(job_id=job_id)
                report["planned"] += 1
    with _isolated(report, "re-sending lost batches"):
        report["resent"] = _lost_batches_send(now)
    with _isolated(report, "ending stalled jobs"):
        report["stalled"] = _stalled_jobs_end(now, report)
    for key in models:
        with _isolated(report, "the sweep of model %s", key):
            report["swept"] += _sweep(key)
    before = now - timedelta(days=settings.JOB_RETENTION_DAYS)
    with _isolated(report, "pruning old jobs"):
        pruned = IndexJob.objects.filter(state__in=IndexJob.TERMINAL, finished_at__lt=before).delete()
        report["pruned"] += pruned[1].get(IndexJob._meta.label, 0)
    with _isolated(report, "pruning old imports"):
        report["pruned"] += product_imports_prune(before=before)
    with _isolated(report, "re-sending lost imports"):
        report["imports_resent"] = product_imports_reconcile()
    with _isolated(report, "reconciling training runs"):
        report.update(trained_models_reconcile())
    with _isolated(report, "sweeping orphan files"):
        report["orphans"] = orphan_files_sweep()
    return report


def _lost_batches_send(now: datetime) -> int:
    """Send again the batches whose message was lost; returns how many were sent."""
    pending = IndexBatch.objects.filter(done=False, job__state__in=[IndexJob.State.QUEUED, IndexJob.State.RUNNING])
    lost = Q(dispatched_at__isnull=True, created_at__lt=now - _GRACE)
    # Redis gives a dead worker's batch to another worker after the visibility timeout; a
    # batch started long before that and still not done lost its message (e.g. Redis restarted).
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    lost |= Q(attempts__gt=0, started_at__lt=now - timedelta(seconds=visibility * 2))
    if queue_length("embed") == 0:
        # Sent, never started, and nothing waits in the queue: the message is gone.
        resend_after = timedelta(seconds=settings.EMBEDDING_BATCH_RESEND_SECONDS)
        lost |= Q(attempts=0, dispatched_at__lt=now - resend_after)
    return _batches_send(list(pending.filter(lost).order_by("pk").values_list("pk", flat=True)))


def _stalled_jobs_end(now: datetime, report: dict[str, int]) -> int:
    """End the jobs without progress for INDEX_JOB_STALL_SECONDS, their remaining items failed,
    each on its own; returns how many were ended."""
    stall = now - timedelta(seconds=settings.INDEX_JOB_STALL_SECONDS)
    stalled = IndexJob.objects.filter(state__in=[IndexJob.State.QUEUED, IndexJob.State.RUNNING]).filter(
        Q(progressed_at__lt=stall) | Q(progressed_at__isnull=True, created_at__lt=stall)
    )
    ended = 0
    reason = f"the job made no progress for {settings.INDEX_JOB_STALL_SECONDS} s"
    for job in stalled:
        with _isolated(report, "ending stalled job %s", job.pk):
            for batch_id in job.batches.filter(done=False).values_list("pk", flat=True):
                index_batch_fail(batch_id=batch_id, error=reason)
            index_job_fail(job_id=job.pk, error=reason)
            ended += 1
    return ended


# Models trained here -------------------------------------------------------------------------

TRAIN_TASK = "search.tasks.model_train"
_TRAINED_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
DEFAULT_TRAINING_EPOCHS = 12


def _training_source(source: str | Path, *, within_root: bool) -> str:
    """'catalog', or the resolved training folder (inside EMBEDDING_TRAINING_ROOT when the
    request came from the API or the admin)."""
    if str(source) == CATALOG:
        return CATALOG
    if not within_root:
        return str(Path(source).resolve())
    root = settings.EMBEDDING_TRAINING_ROOT
    if root is None:
        raise ServiceError("data_not_allowed", "Training from a folder needs EMBEDDING_TRAINING_ROOT to be set; "
                           "train from 'catalog' or use the train_embedding_model command.", field="data",
                           status_code=403)  # fmt: skip
    text = str(source)
    if "\x00" in text or len(text) > 1024:
        raise ServiceError("data_invalid", "The folder name is too long or contains a NUL byte.", field="data")
    resolved = (root / text).resolve()
    if not resolved.is_relative_to(root):
        raise ServiceError("data_not_allowed", "The folder is outside EMBEDDING_TRAINING_ROOT.", field="data",
                           status_code=403)  # fmt: skip
    return str(resolved)


def model_training_validate(
    *, data: str | Path, base: str = "efficientnet_lite0", epochs: int | None = None, key: str | None = None,
    dim: int | None = None, seed: int = 0, activate: bool = False, within_root: bool = False,
) -> dict[str, object]:  # fmt: skip
    """Check what can be checked at once - the key, the settings, and that the data holds
    labelled images of at least two classes - and return the run's fields."""
    from search.datasets import MIN_PER_CLASS, dataset_load
    from search.registry import MODELS, TRAINABLE_BASES

    if base not in TRAINABLE_BASES:
        raise ServiceError("invalid_base", f"base must be one of {', '.join(TRAINABLE_BASES)}.", field="base")
    if not key:
        key = f"{base}_ft_{timezone.now():%Y%m%d_%H%M%S}"
    if not _TRAINED_KEY.match(key):
        raise ServiceError("invalid_key", "key: a lower-case letter, then lower-case letters, digits and '_' "
                           "(at most 40).", field="key")  # fmt: skip
    if key in MODELS or TrainedModel.objects.filter(key=key).exists():
        raise ServiceError("duplicate_key", f"An embedding model '{key}' exists already.", field="key",
                           status_code=409)  # fmt: skip
    config = {"base": base, "epochs": DEFAULT_TRAINING_EPOCHS if epochs is None else epochs, "seed": seed}
    if not 1 <= config["epochs"] <= 200:
        raise ServiceError("invalid_epochs", "epochs must be between 1 and 200.", field="epochs")
    if dim is not None:
        if not 16 <= dim <= 2048:
            raise ServiceError("invalid_dim", "dim must be between 16 and 2048.", field="dim")
        config["dim"] = dim
    source = _training_source(data, within_root=within_root)
    items = dataset_load(source)
    counts = Counter(item.label for item in items)
    usable = [label for label, count in counts.items() if count >= MIN_PER_CLASS]
    if len(usable) < 2:
        raise ServiceError("too_few_classes", f"Training needs at least 2 classes of {MIN_PER_CLASS} or more images "
                           f"(one each for training, validation and test); the data has {len(usable)}.",
                           field="data")  # fmt: skip
    return {"key": key, "base": base, "source": source, "config": config, "activate_when_done": activate}


def model_training_create(**options: object) -> TrainedModel:
    """Record a training run (queued), after ``model_training_validate``."""
    return TrainedModel.objects.create(**model_training_validate(**options))


def model_training_start(**options: object) -> TrainedModel:
    """Record a training run and queue it for a worker (queue ``embed``)."""
    with transaction.atomic():
        trained = model_training_create(**options)
        transaction.on_commit(lambda: task_send(TRAIN_TASK, trained.pk), robust=True)
    return trained


def _trained_update(trained_id: int, **fields: object) -> None:
    training_run_touch(TrainedModel, pk=trained_id, **fields)


def model_training_run(*, trained_id: int) -> TrainedModel | None:
    """Train a queued model (``simsite.training_runs``: claimed once, failed with the reason
    whatever goes wrong): split the data by item, fine-tune, measure the test split against the
    base model, save the weights and plots and register the model (activating it if asked,
    once its vectors are built)."""
    return training_run_execute(TrainedModel, pk=trained_id, first_message="reading the images", train=_model_train)


def _model_train(trained: TrainedModel, saved: list[str]) -> None:
    from search import training
    from search.datasets import dataset_fingerprint, dataset_load, dataset_split
    from search.embedders import get_embedder
    from search.evaluation import retrieval_metrics
    from search.plots import confusion_plot, training_plot

    items = dataset_load(trained.source)
    fingerprint = dataset_fingerprint(items)
    config = training.TrainingConfig(**trained.config)
    splits = dataset_split(items, seed=config.seed)

    curves: dict[str, list[float]] = {}

    def progress(stage: str, fraction: float, measured: dict[str, float]) -> None:
        fields: dict[str, object] = {}
        if stage == "prepare":
            share, message = 0.35 * fraction, f"preparing augmented copies ({fraction:.0%})"
        else:
            for name, value in measured.items():
                if name != "epoch":
                    curves.setdefault(name, []).append(round(value, 4))
            fields["curves"] = curves  # per-epoch figures while it trains
            share = 0.35 + 0.55 * fraction
            message = (
                f"epoch {int(measured['epoch'])}/{config.epochs}: loss {measured['loss']:.3f}, validation "
                f"accuracy {measured['val_accuracy']:.3f}, mAP@10 {measured['val_map@10']:.3f}"
            )
        _trained_update(trained.pk, progress=round(share, 4), message=message[:300], **fields)

    result = training.train(
        [item.read for item in splits["train"]], [item.label for item in splits["train"]],
        [item.read for item in splits["val"]], [item.label for item in splits["val"]],
        config=config, progress=progress,
    )  # fmt: skip
    _trained_update(trained.pk, progress=0.92, message="measuring the held-out test split")
    config = result.config  # with the input size chosen from the data
    base = model_spec_get(config.base)
    spec = ModelSpec(key=trained.key, dim=config.dim, architecture=base.architecture, weights="",
                     description="", input_size=config.input_size, mean=base.mean, std=base.std,
                     kind="trained", base=config.base, classes=tuple(result.classes))  # fmt: skip
    embedder = training.trained_embedder(result, spec)
    test = [item for item in splits["test"] if item.label in result.classes]
    datas, labels = [], []
    for item in test:
        try:
            datas.append(item.read())
        except OSError:
            continue
        labels.append(item.label)
    vectors = embedder.embed_encoded(datas)
    kept = [i for i, vector in enumerate(vectors) if not isinstance(vector, Exception)]
    labels = [labels[i] for i in kept]
    datas = [datas[i] for i in kept]
    test_vectors = np.stack([vectors[i] for i in kept])
    test_metrics = retrieval_metrics(test_vectors, labels)
    base_metrics = retrieval_metrics(np.stack(get_embedder(base).embed_encoded(datas)), labels)
    confusion = training.confusion_matrix(embedder, test_vectors, labels, result.classes)

    folder = f"models/embeddings/{trained.key}"
    saved.append(default_storage.save(f"{folder}/weights.pt", ContentFile(training.weights_file(result))))
    plots = {
        "training": training_plot(result.curves, best_epoch=result.best_epoch, key=trained.key),
        "confusion": confusion_plot(confusion, result.classes, key=trained.key),
    }
    plot_names = {}
    for name, png in plots.items():
        plot_names[name] = default_storage.save(f"{folder}/{name}.png", ContentFile(png))
        saved.append(plot_names[name])
    dataset = "the catalog" if trained.source == CATALOG else Path(trained.source).name
    metrics = {
        "dataset": dataset,
        "split": {name: len(members) for name, members in splits.items()},
        "test": test_metrics["overall"],
        "test_by_class": test_metrics["by_class"],
        "base_test": base_metrics["overall"],
        "base_test_by_class": base_metrics["by_class"],
        "test_accuracy": round(float(np.trace(confusion) / max(confusion.sum(), 1)), 4),
        "confusion": confusion.tolist(),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.curves.get("loss", [])),
        "training_images_per_second": round(result.images_per_second, 1),
        "device": str(embedder.device),
        "embedding": f"hidden layer, {config.dim}-d, L2-normalised (cosine classifier)",
    }
    with transaction.atomic():
        TrainedModel.objects.filter(pk=trained.pk).update(
            status=TrainedModel.Status.SUCCEEDED, progress=1.0, message="", dim=config.dim,
            classes=result.classes, config=asdict(config), metrics=metrics, curves=result.curves,
            weights=saved[0], plots=plot_names, fingerprint=fingerprint, seconds=round(result.seconds, 1),
            finished_at=timezone.now(), updated_at=timezone.now(),
        )  # fmt: skip
        if trained.activate_when_done:
            # Searches move to it once its vectors are built, with no gap (index job, then switch).
            # Robust: the model has succeeded once this commits; a failure here is logged (the
            # model can be indexed and activated by hand) and must not fail the run.
            transaction.on_commit(lambda: index_job_create(collection=Collection.ALL, model=trained.key,
                                                           activate_when_done=True), robust=True)  # fmt: skip


def model_training_fail(*, trained_id: int, error: str) -> None:
    training_run_fail(TrainedModel, pk=trained_id, error=error)


def trained_model_delete(*, trained: TrainedModel) -> None:
    """Delete a model trained here, its vectors, index and files. Refused for the active model,
    a model being indexed, and a run in progress: checked with its row locked, so an activation
    or an index job of it under way commits first and is seen, or waits and finds it gone."""
    with transaction.atomic():
        trained = TrainedModel.objects.select_for_update().filter(pk=trained.pk).first()
        if trained is None:
            return  # deleted meanwhile
        if trained.key == active_model_key():
            raise ServiceError("model_active", f"'{trained.key}' is the active model; activate another one first.",
                               status_code=409)  # fmt: skip
        if trained.status == TrainedModel.Status.RUNNING:
            raise ServiceError("model_training", f"'{trained.key}' is being trained; wait for it to end.",
                               status_code=409)  # fmt: skip
        if IndexJob.objects.filter(model=trained.key).exclude(state__in=IndexJob.TERMINAL).exists():
            raise ServiceError("model_indexing", f"'{trained.key}' is being indexed; cancel the job first.",
                               status_code=409)  # fmt: skip
        names = [name for name in [trained.weights, *trained.plots.values()] if name]
        Embedding.objects.filter(model=trained.key).delete()
        EmbeddingFailure.objects.filter(model=trained.key).delete()
        SearchTuning.objects.filter(model=trained.key).delete()  # a new model of that name has another graph
        SearchQuerySample.objects.filter(model=trained.key).delete()
        trained.delete()
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {hnsw_index_name(trained.key)}")
        _delete_after_commit(names)


def _delete_after_commit(names: Sequence[str]) -> None:
    """Delete these stored files once the transaction commits, each on its own: a file that
    cannot be deleted is logged and left to the orphan sweep, never failing what committed."""
    for name in names:
        transaction.on_commit(lambda name=name: default_storage.delete(name), robust=True)


def trained_models_reconcile() -> dict[str, int]:
    """Re-send training runs whose message was lost; fail those whose worker stopped
    reporting (killed, out of memory). Part of the periodic reconciler."""
    stalled, resent = training_runs_reconcile(
        TrainedModel, stall_seconds=settings.EMBEDDING_TRAINING_STALL_SECONDS, task=TRAIN_TASK, queue="embed"
    )
    return {"training_resent": resent, "training_stalled": stalled}


DUPLICATES_MAX_GROUPS = 500  # groups one review request may resolve


def _groups_checked(groups: Sequence[Sequence[ItemRef]]) -> dict[ItemRef, object]:
    if not groups:
        raise ServiceError("invalid", "Name at least one group.", field="groups")
    if len(groups) > DUPLICATES_MAX_GROUPS:
        raise ServiceError("invalid", f"At most {DUPLICATES_MAX_GROUPS} groups at once.", field="groups")
    for group in groups:
        if len(set(group)) < 2:
            raise ServiceError("invalid", "A group names at least two different items.", field="groups")
    return items_by_ref([ref for group in groups for ref in group])


def duplicates_dismiss(*, groups: Sequence[Sequence[ItemRef]], user: object = None) -> int:
    """Remember each group as *not duplicates* (``duplicate_groups`` never joins two of its
    items again). Items deleted meanwhile are skipped. Returns the groups remembered."""
    found = _groups_checked(groups)
    remembered = 0
    with transaction.atomic():
        for group in groups:
            present = [ref for ref in dict.fromkeys(group) if ref in found]
            if len(present) < 2:
                continue
            dismissal = DuplicateDismissal.objects.create(created_by=user if getattr(user, "pk", None) else None)
            DuplicateDismissalItem.objects.bulk_create(
                DuplicateDismissalItem(dismissal=dismissal, **{ref.item_kind.column: ref.id}) for ref in present
            )
            remembered += 1
    return remembered


def duplicates_keep(*, groups: Sequence[tuple[ItemRef, Sequence[ItemRef]]]) -> int:
    """For each ``(keep, others)`` group delete the others (vectors and unused files with
    them), in one transaction. Refused, deleting nothing, when a copy to keep is gone or is
    also to be deleted: a review must never lose every copy. The rows are locked before the
    check, so two reviewers keeping different copies of one group cannot delete both.
    Returns the items deleted."""
    found = _groups_checked([[keep, *others] for keep, others in groups])
    keeping = {keep for keep, _ in groups}
    doomed = {ref for _, others in groups for ref in others if ref in found}
    if both := sorted(keeping & doomed):
        raise ServiceError("invalid", f"{both[0].kind} {both[0].id} is kept in one group and deleted in another.",
                           field="groups")  # fmt: skip
    with transaction.atomic():
        present: set[ItemRef] = set()
        for kind in (PRODUCT, GALLERY_IMAGE):  # in one order, by id: no deadlock between reviewers
            ids = sorted(ref.id for ref in keeping | doomed if ref.kind == kind.name)
            rows = kind.model.objects.select_for_update().filter(pk__in=ids).order_by("pk")
            present.update(ItemRef(kind.name, pk) for pk in rows.values_list("pk", flat=True))
        if lost := sorted(ref for ref in keeping if ref not in present):
            raise ServiceError("keep_missing", f"The copy to keep ({lost[0].kind} {lost[0].id}) no longer exists; "
                               "reload the groups.", status_code=409)  # fmt: skip
        gallery = [ref.id for ref in doomed if ref.kind == GALLERY_IMAGE.name and ref in present]
        products = [ref.id for ref in doomed if ref.kind == PRODUCT.name and ref in present]
        deleted = gallery_images_delete(ids=gallery) if gallery else 0
        return deleted + (products_delete(ids=products) if products else 0)


SCAN_TASK = "search.tasks.duplicate_scan_chunk"


def duplicates_scan_refresh(*, model: str, stamp: dict[str, int | None] | None = None) -> DuplicateScan | None:
    """Start a background duplicates scan where one is due: past ``DUPLICATES_SYNC_MAX_VECTORS``
    vectors, when no scan saw the current vectors and none is under way. A scan silent for
    ``DUPLICATES_SCAN_STALL_SECONDS`` (its message lost, its worker killed) is resumed where it
    stopped; after a failed scan, a new one waits as long. Idempotent: any read may call it.
    ``stamp`` (possibly read on a replica) settles the common cases; the vectors are counted
    on the primary only when a new scan may be due. Returns the scan under way, if any."""
    key = model_spec_get(model).key
    stamp = stamp or embedding_stamp(model=key)
    if stamp["count"] <= settings.DUPLICATES_SYNC_MAX_VECTORS:
        return None
    active = (DuplicateScan.State.QUEUED, DuplicateScan.State.RUNNING)
    with transaction.atomic():  # reads the primary (simsite.replicas.ReplicaRouter)
        with connection.cursor() as cursor:  # one request decides at a time; the others read its answer
            cursor.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", [f"duplicates-scan:{key}"])
            if not cursor.fetchone()[0]:
                latest = duplicate_scan_latest(model=key)
                return latest if latest is not None and latest.state in active else None
        latest = duplicate_scan_latest(model=key)
        now = timezone.now()
        quiet = now - timedelta(seconds=settings.DUPLICATES_SCAN_STALL_SECONDS)
        if latest is not None and latest.state in active:
            if latest.progressed_at < quiet:  # resume it: chunks are claimed by position, a copy is harmless
                DuplicateScan.objects.filter(pk=latest.pk).update(progressed_at=now)
                transaction.on_commit(lambda: task_send(SCAN_TASK, latest.pk), robust=True)
            return latest

        def settled(seen: dict[str, int | None]) -> bool:  # up to date, or failed on these very vectors just now
            same = latest is not None and (latest.vectors_count, latest.vectors_last) == (seen["count"], seen["last"])
            recent_failure = latest is not None and latest.finished_at is not None and latest.finished_at > quiet
            return same and (latest.state == DuplicateScan.State.SUCCEEDED or recent_failure)

        if settled(stamp):
            return None
        stamp = embedding_stamp(model=key)  # on the primary (in this transaction): what the scan will see
        if settled(stamp):
            return None
        scan = DuplicateScan.objects.create(model=key, vectors_count=stamp["count"], vectors_last=stamp["last"])
        transaction.on_commit(lambda: task_send(SCAN_TASK, scan.pk), robust=True)
    return scan


def duplicate_scan_run(*, scan_id: int) -> bool:
    """Scan the next chunk of a duplicates scan's vectors; True when more remain (the caller
    queues the next chunk). Safe to run twice: a chunk is claimed by the scan's position."""
    scan = DuplicateScan.objects.filter(pk=scan_id).first()
    if scan is None or scan.state in (DuplicateScan.State.SUCCEEDED, DuplicateScan.State.FAILED):
        return False
    spec = model_spec_get(scan.model)
    ids = list(Embedding.objects.filter(model=spec.key, id__gt=scan.last_id, id__lte=scan.vectors_last or 0)
               .order_by("id").values_list("id", flat=True)[: settings.DUPLICATES_SCAN_CHUNK])  # fmt: skip
    with transaction.atomic():
        pairs: list[DuplicatePair] = []
        if ids:
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
                cursor.execute(duplicate_neighbours_sql(spec.dim, Collection.ALL, id_range=True),
                               [spec.key, settings.DUPLICATES_NEIGHBOURS, spec.key, scan.last_id, ids[-1],
                                settings.DUPLICATES_PAIR_FLOOR])  # fmt: skip
                pairs = [DuplicatePair(scan_id=scan.pk, a_product_id=row[0], a_gallery_image_id=row[1],
                                       b_product_id=row[2], b_gallery_image_id=row[3], similarity=row[4])
                         for row in cursor.fetchall()]  # fmt: skip
        more = len(ids) == settings.DUPLICATES_SCAN_CHUNK
        now = timezone.now()
        claimed = DuplicateScan.objects.filter(pk=scan.pk, last_id=scan.last_id).exclude(
            state__in=[DuplicateScan.State.SUCCEEDED, DuplicateScan.State.FAILED]
        ).update(
            last_id=ids[-1] if ids else scan.last_id, done=F("done") + len(ids), progressed_at=now,
            state=DuplicateScan.State.RUNNING if more else DuplicateScan.State.SUCCEEDED,
            finished_at=None if more else now,
        )  # fmt: skip
        if not claimed:  # another delivery scanned this chunk first
            transaction.set_rollback(True)
            return False
        DuplicatePair.objects.bulk_create(pairs, batch_size=5000)
        if not more:  # the older scans of this model are superseded
            DuplicateScan.objects.filter(model=spec.key, created_at__lt=scan.created_at).exclude(
                state__in=[DuplicateScan.State.QUEUED, DuplicateScan.State.RUNNING]
            ).delete()
    return more


def duplicate_scan_fail(*, scan_id: int, error: str) -> None:
    DuplicateScan.objects.filter(pk=scan_id).exclude(state=DuplicateScan.State.SUCCEEDED).update(
        state=DuplicateScan.State.FAILED, error=error[:500], finished_at=timezone.now()
    )


# The hnsw.ef_search values a tuning tries, smallest first (pgvector's default is 40).
EF_SEARCH_LADDER = (40, 60, 80, 120, 160, 240, 320, 480, 640, 1000)
TUNING_K = 10
# Fewer recorded queries than this measure a recall too loosely (about +-0.02 at 50 x 10).
TUNING_MIN_QUERIES = 50


def search_queries_record(*, model: str, vectors: Sequence[np.ndarray]) -> int:
    """Keep ``SEARCH_TUNE_SAMPLE_PERCENT`` of these search query vectors for tuning, the newest
    ``SEARCH_TUNE_QUERIES`` of the model staying. Returns how many were kept. One statement
    (the oldest dropped as the new ones go in): it runs on the search's path."""
    kept = [v for v in vectors if random.random() * 100 < settings.SEARCH_TUNE_SAMPLE_PERCENT]  # noqa: S311 - a sample
    if not kept:
        return 0
    values = ", ".join(["(%s, %s::vector, now())"] * len(kept))
    table = SearchQuerySample._meta.db_table
    sql = (
        f"WITH dropped AS (DELETE FROM {table} WHERE model = %s AND id <= (SELECT id FROM {table} "  # noqa: S608
        f"WHERE model = %s ORDER BY id DESC OFFSET %s LIMIT 1)) "
        f"INSERT INTO {table} (model, vector, created_at) VALUES {values}"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [model, model, max(0, settings.SEARCH_TUNE_QUERIES - len(kept)),
             *(part for vector in kept for part in (model, Vector(vector).to_text()))],
        )  # fmt: skip
    return len(kept)


def search_tune(*, model: str, target_recall: float | None = None, queries: int | None = None) -> SearchTuning:
    """Measure the smallest ``hnsw.ef_search`` at which the model's HNSW index finds
    ``target_recall`` of the true 10 nearest neighbours of the queries users sent (the newest
    recorded, ``search_queries_record``; with the margin of the estimate), and make searches
    use it.

    The truth is one exact pass over every vector (``exact_neighbours``). Recall depends on
    the built graph, not only on its size (three builds of the same million vectors: 0.936-0.963
    at one ef_search), and on the queries: stored vectors searched for themselves are found far
    more easily than new ones (0.96 against 0.82 at ef_search 40 on a million vectors), which is
    why the recorded queries are the measure. Takes seconds at 100,000 vectors, about a minute
    at a million (the pass reads every vector once).
    """
    spec = model_spec_get(model)
    target = settings.SEARCH_TUNE_RECALL if target_recall is None else target_recall
    limit = settings.SEARCH_TUNE_QUERIES if queries is None else queries
    if not 0 < target <= 1:
        raise ServiceError("invalid_recall", f"The target recall must be in (0, 1], not {target}.")
    if not search_index_valid(model=spec.key):
        raise ServiceError("no_index", f"Model '{spec.key}' has no search index to tune; index its items first.",
                           status_code=409)  # fmt: skip
    sample = search_query_samples(model=spec.key, limit=limit)
    needed = min(limit, TUNING_MIN_QUERIES)
    if len(sample) < needed:
        raise ServiceError(
            "too_few_queries",
            f"Model '{spec.key}' has {len(sample)} recorded search queries; tuning needs {needed} (searches by "
            f"image keep {settings.SEARCH_TUNE_SAMPLE_PERCENT}% of theirs).",
            status_code=409,
        )
    vectors = embedding_count(model=spec.key)
    if not vectors:
        raise ServiceError("no_vectors", f"Model '{spec.key}' has no vectors to search.", status_code=409)
    truths = exact_neighbours(model=spec.key, queries=sample, k=TUNING_K)
    steps = []
    for ef_search in EF_SEARCH_LADDER:
        recalls, times = [], []
        for vector, truth in zip(sample, truths, strict=True):
            started = time.perf_counter()
            matches = items_similar_to(vector=vector, model=spec.key, k=TUNING_K, ef_search=ef_search)
            times.append(1000 * (time.perf_counter() - started))
            recalls.append(len({match.ref for match in matches}.intersection(truth)) / len(truth))
        # The recall of these queries is an estimate of the recall of all queries: the value
        # chosen must reach the target with the estimate's margin (two standard errors, ~97.5%
        # one-sided). Without it, half the choices fall short: a million vectors, tuned at
        # 120 (0.951 on the recorded queries), gave 0.946 on 200 others.
        mean = float(np.mean(recalls))
        low = mean - 2 * float(np.std(recalls, ddof=1)) / np.sqrt(len(recalls)) if len(recalls) > 1 else mean
        steps.append({"ef_search": ef_search, "recall": round(mean, 4), "recall_low": round(low, 4),
                      "p50_ms": round(float(np.median(times)), 2)})  # fmt: skip
        if low >= target:
            break
    chosen = next((step for step in steps if step["recall_low"] >= target), steps[-1])
    tuning, _ = SearchTuning.objects.update_or_create(
        model=spec.key,
        defaults={"ef_search": chosen["ef_search"], "recall": chosen["recall"], "target_recall": target,
                  "vectors": vectors, "queries": len(sample), "steps": steps},
    )  # fmt: skip
    search_caches_forget()  # this process at once; the others within a minute
    if chosen["recall_low"] < target:
        logger.warning("model %s: recall@10 %.3f (at least %.3f) at ef_search %s, short of the target %.3f",
                       spec.key, chosen["recall"], chosen["recall_low"], chosen["ef_search"], target)  # fmt: skip
    return tuning


def search_tune_due() -> dict[str, int]:
    """Tune each model whose index holds at least ``SEARCH_TUNE_MIN_VECTORS`` vectors, with
    enough recorded queries, that was never tuned, has grown or shrunk by a quarter since, or
    has twice the recorded queries it was tuned on (a closer estimate; periodic: Celery beat).
    Nothing to do when ``SEARCH_HNSW_EF_SEARCH`` fixes the value. Returns the tuned values."""
    if settings.SEARCH_HNSW_EF_SEARCH is not None:
        return {}
    tuned = {}
    for model, vectors in embedding_counts().items():
        if vectors < settings.SEARCH_TUNE_MIN_VECTORS:
            continue
        recorded = search_query_sample_count(model=model)
        if recorded < min(settings.SEARCH_TUNE_QUERIES, TUNING_MIN_QUERIES):
            continue  # not searched enough yet: the size rule holds meanwhile
        last = search_tuning_get(model=model)
        same_size = last is not None and last.vectors / TUNING_GROWTH <= vectors <= last.vectors * TUNING_GROWTH
        if same_size and recorded < 2 * last.queries:
            continue
        with _session_lock(f"search-tune:{model}") as taken:
            if not taken or not search_index_valid(model=model):
                continue  # another worker tunes it, or its index is still being built
            try:
                tuned[model] = search_tune(model=model).ef_search
            except ServiceError as error:  # a trained model deleted meanwhile, say
                logger.warning("tuning %s: %s", model, error.message)
    return tuned
