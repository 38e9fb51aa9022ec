"""Index jobs and batches: queued with the writes that need them, planned, sent to the embed
queue, embedded exactly once however often delivered, and their vectors upserted."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from search.items import KINDS, ItemRef, kinds_of
from search.models import Collection, Embedding, EmbeddingFailure, IndexBatch, IndexJob
from search.selectors.embedding_models import active_model_key, model_spec_get
from search.selectors.jobs import models_being_indexed
from search.services.activation import active_model_set, embedding_index_ensure
from search.services.locks import model_lock, model_locked
from simsite.celery import task_send
from simsite.errors import ServiceError, failure_reason
from simsite.jobs import job_cancel

logger = logging.getLogger(__name__)

PLAN_TASK = "search.tasks.index_job_plan"
BATCH_TASK = "search.tasks.embed_batch"


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


def index_batches_send(*, batch_ids: Sequence[int]) -> int:
    """Send batches to the embed queue, recording when; stops at the first broker failure
    (the reconciler sends the rest later). Returns how many were sent."""
    sent: list[int] = []
    for batch_id in batch_ids:
        if not task_send(BATCH_TASK, batch_id):
            break
        sent.append(batch_id)
    IndexBatch.objects.filter(pk__in=sent).update(dispatched_at=timezone.now())
    return len(sent)


def index_batch_received(*, batch_id: int, worker: str) -> None:
    """Record that ``worker`` holds the batch's message (taken from the queue, perhaps not started:
    a worker running a task that was acknowledged early may hold the next message meanwhile)."""
    IndexBatch.objects.filter(pk=batch_id, done=False).update(worker=worker)


def index_batches_resume(*, worker: str) -> int:
    """Send again the unfinished batches a worker of this node name had taken: called when
    the worker starts, so its predecessor of the same name is dead (killed, out of memory) and
    those batches' messages sit unacknowledged in Redis until the visibility timeout (an hour).
    A second delivery of a batch that did finish meanwhile does nothing. Returns how many."""
    if not worker:
        return 0
    pending = IndexBatch.objects.filter(worker=worker, done=False, job__state__in=IndexJob.ACTIVE)
    return index_batches_send(batch_ids=list(pending.order_by("pk").values_list("pk", flat=True)))


def index_job_dispatch(*, job_id: int) -> int:
    """Send the job's batches that were never sent."""
    pending = IndexBatch.objects.filter(job_id=job_id, done=False, dispatched_at__isnull=True).order_by("number")
    return index_batches_send(batch_ids=list(pending.values_list("pk", flat=True)))


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
        model_locked(key)  # a delete of this model waits, then sees the job (or this finds it gone)
        job = IndexJob.objects.create(collection=collection, model=key, mode=mode,
                                      activate_when_done=activate_when_done)  # fmt: skip
        transaction.on_commit(lambda: _plan_dispatch(job.pk), robust=True)
    return job


def items_index_job_create(
    *, model: str, product_ids: Sequence[int], gallery_ids: Sequence[int], mode: str = IndexJob.Mode.MISSING
) -> IndexJob:
    """Record a job of ``model`` for these items, batched; its messages are sent after the commit.
    Must run inside a transaction that holds the model (``model_locked``)."""
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
            if not model_lock(key):  # a trained model deleted while a job or the active-model row names it
                logger.warning("%s items not indexed with model %s: it no longer exists",
                               len(product_ids) + len(gallery_ids), key)  # fmt: skip
                continue
            job = items_index_job_create(model=key, product_ids=product_ids, gallery_ids=gallery_ids, mode=mode)
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
    return job_cancel(job, code="job_finished", what="Job")


def index_job_fail(*, job_id: int, error: str) -> None:
    """End a job as failed (a problem no retry fixes, such as missing weights)."""
    IndexJob.objects.filter(pk=job_id).end(IndexJob.State.FAILED, error=error[:2000])


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
    job = IndexJob.objects.filter(pk=job_id)
    with transaction.atomic():
        if job.filter(Q(done__gt=0) | Q(failed=0)).end(IndexJob.State.SUCCEEDED):
            _activate_if_asked(job.get())
    job.filter(done=0, failed__gt=0).end(IndexJob.State.FAILED, error="every item failed; see the failures")


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


def _batch_begin(batch_id: int, worker: str) -> tuple[IndexBatch | None, bool]:
    """Count a delivery of the batch to ``worker``; (batch, over the attempt limit), or (None, _)
    if there is nothing to do (gone, done, or its job ended)."""
    with transaction.atomic():
        batch = IndexBatch.objects.select_for_update().select_related("job").filter(pk=batch_id).first()
        if batch is None or batch.done or batch.job.state in IndexJob.TERMINAL:
            return None, False
        batch.attempts += 1
        batch.started_at = timezone.now()
        batch.worker = worker
        batch.save(update_fields=["attempts", "started_at", "worker"])
    IndexJob.objects.filter(pk=batch.job_id).claim()
    return batch, batch.attempts > settings.EMBEDDING_BATCH_MAX_ATTEMPTS


def index_batch_run(*, batch_id: int, worker: str = "") -> None:
    """Embed one batch and record it, exactly once however often it is delivered (``worker``:
    the Celery node name running it, recorded for ``index_batches_resume``).

    Items whose current image already has a vector for the model are skipped (mode
    ``missing``); items that cannot be decoded fail alone. The vectors, the batch's ``done``
    flag and the job's counters commit together. A batch delivered more than
    ``EMBEDDING_BATCH_MAX_ATTEMPTS`` times (its worker died each time) fails its items.
    """
    from search.embedders import get_embedder  # torch stays out of the web process until needed

    batch, over_limit = _batch_begin(batch_id, worker)
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
