"""Writes for the search engine: index jobs and batches, vectors, the active model, and the
reconciler that makes lost messages, dead workers and stuck jobs harmless."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from catalog.csv_import import product_imports_prune, product_imports_reconcile
from search.items import KINDS, ItemRef, kinds_of
from search.models import (
    HNSW_BUILD_SETTING,
    ActiveModel,
    Collection,
    Embedding,
    EmbeddingFailure,
    IndexBatch,
    IndexJob,
    hnsw_index_name,
    hnsw_index_sql,
)
from search.registry import ModelSpec, model_spec
from search.selectors import active_model_key, model_coverage, models_being_indexed
from simsite.celery import queue_length, task_send
from simsite.errors import ServiceError

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
    spec = model_spec(model)
    name = hnsw_index_name(spec.key)
    with _session_lock(f"hnsw-build:{spec.key}") as taken:
        if taken:
            _index_build(spec, name)


def _index_build(spec: ModelSpec, name: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s", [name]
        )
        row = cursor.fetchone()
        if row is not None and row[0]:
            return
        if row is not None:
            logger.warning("index %s is INVALID (a concurrent build failed); rebuilding it", name)
            cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        cursor.execute(HNSW_BUILD_SETTING)
        try:
            cursor.execute(hnsw_index_sql(spec.key, spec.dim, concurrently=True))
        finally:
            cursor.execute("RESET max_parallel_maintenance_workers")


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


def _plan_dispatch(job_id: int) -> None:
    task_send(PLAN_TASK, job_id)


def index_job_create(*, collection: str, model: str | None = None, mode: str = IndexJob.Mode.MISSING) -> IndexJob:
    """Queue a job that embeds a collection's items with ``model`` (default: the active one)."""
    if collection not in Collection.values:
        raise ServiceError("invalid_collection", f"collection must be one of {Collection.values}.", field="collection")
    if mode not in IndexJob.Mode.values:
        raise ServiceError("invalid_mode", f"mode must be one of {IndexJob.Mode.values}.", field="mode")
    key = model_spec(model or active_model_key()).key
    with transaction.atomic():
        job = IndexJob.objects.create(collection=collection, model=key, mode=mode)
        transaction.on_commit(lambda: _plan_dispatch(job.pk))
    return job


def _jobs_for_items(model: str, product_ids: Sequence[int], gallery_ids: Sequence[int]) -> IndexJob:
    collection = Collection.PRODUCTS if not gallery_ids else Collection.GALLERY if not product_ids else Collection.ALL
    job = IndexJob.objects.create(collection=collection, model=model, mode=IndexJob.Mode.MISSING)
    job.total = _create_batches(job, product_ids=list(product_ids), gallery_ids=list(gallery_ids))
    job.save(update_fields=["total"])
    transaction.on_commit(lambda: index_job_dispatch(job_id=job.pk))
    return job


def items_index(*, product_ids: Sequence[int] = (), gallery_ids: Sequence[int] = ()) -> IndexJob | None:
    """Embed these new or changed items in the background, with every model in use.

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
            job = _jobs_for_items(key, product_ids, gallery_ids)
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
        index_job_fail(job_id=job_id, error=f"could not create the vector index: {type(error).__name__}")
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
        transaction.on_commit(lambda: index_job_dispatch(job_id=job_id))


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
    running.filter(Q(done__gt=0) | Q(failed=0)).update(state=IndexJob.State.SUCCEEDED, finished_at=now)
    running.filter(done=0, failed__gt=0).update(
        state=IndexJob.State.FAILED, finished_at=now, error="every item failed; see the failures"
    )


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
    embedder = get_embedder(job.model)
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
    failed = [(entry, str(result)[:300]) for entry, result in zip(items, outcome, strict=True)
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
    key = model_spec(model).key
    if not force:
        missing = sum(row["missing"] for row in model_coverage(model=key))
        if missing:
            raise ServiceError(
                "model_incomplete",
                f"{missing} items have no {key} vector yet; index them first or activate with force.",
                status_code=409,
            )
    embedding_index_ensure(model=key)
    ActiveModel.objects.update_or_create(pk=1, defaults={"key": key})
    return key


def _sweep(model: str) -> int:
    """Queue items that lack a current vector of ``model`` and are not on their way to one."""
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


def _reconcile() -> dict[str, int]:
    now = timezone.now()
    report = {"planned": 0, "resent": 0, "stalled": 0, "swept": 0, "pruned": 0, "imports_resent": 0}
    models = sorted(models_being_indexed())
    for key in models:
        embedding_index_ensure(model=key)
    unplanned = IndexJob.objects.filter(
        state=IndexJob.State.QUEUED, total=0, batches__isnull=True, created_at__lt=now - _GRACE
    )
    for job_id in unplanned.values_list("pk", flat=True):
        index_job_plan(job_id=job_id)
        report["planned"] += 1

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
    report["resent"] = _batches_send(list(pending.filter(lost).order_by("pk").values_list("pk", flat=True)))

    stall = now - timedelta(seconds=settings.INDEX_JOB_STALL_SECONDS)
    stalled = IndexJob.objects.filter(state__in=[IndexJob.State.QUEUED, IndexJob.State.RUNNING]).filter(
        Q(progressed_at__lt=stall) | Q(progressed_at__isnull=True, created_at__lt=stall)
    )
    for job in stalled:
        reason = f"the job made no progress for {settings.INDEX_JOB_STALL_SECONDS} s"
        for batch_id in job.batches.filter(done=False).values_list("pk", flat=True):
            index_batch_fail(batch_id=batch_id, error=reason)
        index_job_fail(job_id=job.pk, error=reason)
        report["stalled"] += 1

    for key in models:
        report["swept"] += _sweep(key)

    before = now - timedelta(days=settings.JOB_RETENTION_DAYS)
    report["pruned"] = (
        IndexJob.objects.filter(state__in=IndexJob.TERMINAL, finished_at__lt=before)
        .delete()[1]
        .get(IndexJob._meta.label, 0)
    )
    report["pruned"] += product_imports_prune(before=before)
    report["imports_resent"] = product_imports_reconcile()
    return report
