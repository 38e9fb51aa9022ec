"""Writes for the search engine: index jobs, vectors, the active model."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from catalog.models import GalleryImage, Product
from search.models import (
    HNSW_BUILD_SETTING,
    ActiveModel,
    Collection,
    Embedding,
    IndexBatch,
    IndexJob,
    hnsw_index_sql,
)
from search.registry import model_spec
from search.selectors import active_model_key, model_coverage
from simsite.errors import ServiceError

logger = logging.getLogger(__name__)

_COLLECTIONS = {"products": (Product, "product"), "gallery": (GalleryImage, "gallery_image")}


def embedding_index_ensure(*, model: str) -> None:
    """Create the model's HNSW index if missing, without locking writers (CONCURRENTLY).

    Must run outside a transaction.
    """
    spec = model_spec(model)
    with connection.cursor() as cursor:
        cursor.execute(HNSW_BUILD_SETTING)
        cursor.execute(hnsw_index_sql(spec.key, spec.dim, concurrently=True))
        cursor.execute("RESET max_parallel_maintenance_workers")


def _collections(collection: str) -> list[str]:
    return ["products", "gallery"] if collection == Collection.ALL else [collection]


def _dispatch_batches(job: IndexJob) -> None:
    from search.tasks import embed_batch

    for batch_id in job.batches.filter(done=False).values_list("pk", flat=True):
        embed_batch.delay(batch_id)


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


def index_job_create(*, collection: str, model: str | None = None, mode: str = IndexJob.Mode.MISSING) -> IndexJob:
    """Queue a job that embeds a collection's items with ``model`` (default: the active one)."""
    if collection not in Collection.values:
        raise ServiceError("invalid_collection", f"collection must be one of {Collection.values}.", field="collection")
    if mode not in IndexJob.Mode.values:
        raise ServiceError("invalid_mode", f"mode must be one of {IndexJob.Mode.values}.", field="mode")
    key = model_spec(model or active_model_key()).key
    job = IndexJob.objects.create(collection=collection, model=key, mode=mode)
    from search.tasks import index_job_plan

    index_job_plan.delay_on_commit(job.pk)
    return job


def models_being_indexed() -> set[str]:
    """The active model plus every model a collection job is building right now."""
    building = IndexJob.objects.exclude(state__in=IndexJob.TERMINAL).values_list("model", flat=True)
    return {active_model_key(), *building}


def items_index(*, product_ids: Sequence[int] = (), gallery_ids: Sequence[int] = ()) -> IndexJob | None:
    """Embed these new or changed items in the background, with every model in use.

    Returns the job for the active model (the one searches wait for).
    """
    if not product_ids and not gallery_ids:
        return None
    collection = Collection.PRODUCTS if not gallery_ids else Collection.GALLERY if not product_ids else Collection.ALL
    active = active_model_key()
    result = None
    for key in sorted(models_being_indexed()):
        job = IndexJob.objects.create(collection=collection, model=key, mode=IndexJob.Mode.MISSING)
        job.total = _create_batches(job, product_ids=list(product_ids), gallery_ids=list(gallery_ids))
        job.save(update_fields=["total"])
        transaction.on_commit(lambda job=job: _dispatch_batches(job))
        if key == active:
            result = job
    return result


def index_job_plan(*, job_id: int) -> None:
    """Enumerate a queued job's items into batches and send them to the embed queue."""
    claimed = IndexJob.objects.filter(pk=job_id, state=IndexJob.State.QUEUED, total=0, batches__isnull=True)
    job = claimed.first()
    if job is None:
        return
    try:
        embedding_index_ensure(model=job.model)
    except Exception as error:
        IndexJob.objects.filter(pk=job_id).update(
            state=IndexJob.State.FAILED, error=f"could not create the vector index: {error}", finished_at=timezone.now()
        )
        raise
    ids: dict[str, list[int]] = {"products": [], "gallery": []}
    for name in _collections(job.collection):
        model_class, field = _COLLECTIONS[name]
        items = model_class.objects.order_by("pk")
        if job.mode == IndexJob.Mode.MISSING:
            current = Embedding.objects.filter(model=job.model, sha256=F(f"{field}__sha256"))
            items = items.exclude(pk__in=current.values(field))
        ids[name] = list(items.values_list("pk", flat=True))
    with transaction.atomic():
        job = IndexJob.objects.select_for_update().get(pk=job_id)
        if job.state != IndexJob.State.QUEUED or job.batches.exists():
            return
        job.total = _create_batches(job, product_ids=ids["products"], gallery_ids=ids["gallery"])
        job.state = IndexJob.State.RUNNING if job.total else IndexJob.State.SUCCEEDED
        job.started_at = timezone.now()
        if not job.total:
            job.finished_at = job.started_at
        job.save()
        transaction.on_commit(lambda: _dispatch_batches(job))


def index_job_cancel(*, job: IndexJob) -> IndexJob:
    updated = IndexJob.objects.filter(pk=job.pk, state__in=[IndexJob.State.QUEUED, IndexJob.State.RUNNING]).update(
        state=IndexJob.State.CANCELLED, finished_at=timezone.now()
    )
    job.refresh_from_db()
    if not updated and job.state != IndexJob.State.CANCELLED:
        raise ServiceError("job_finished", f"Job {job.pk} has already {job.state}.", status_code=409)
    return job


def index_job_fail(*, job_id: int, error: str) -> None:
    IndexJob.objects.filter(pk=job_id).exclude(state__in=IndexJob.TERMINAL).update(
        state=IndexJob.State.FAILED, error=error[:2000], finished_at=timezone.now()
    )


def _item_key(item: Product | GalleryImage) -> tuple[str, int]:
    return ("product", item.pk) if isinstance(item, Product) else ("gallery_image", item.pk)


def _load(item: Product | GalleryImage) -> bytes:
    field = item.image if isinstance(item, Product) else item.file
    with default_storage.open(field.name, "rb") as handle:
        return handle.read()


def index_batch_run(*, batch_id: int) -> None:
    """Embed one batch and record it, exactly once however often it is delivered.

    Items whose current image already has a vector for the model are skipped (mode
    ``missing``); items that cannot be decoded are recorded as failed, not the job. The
    vectors, the batch's ``done`` flag and the job's counters commit together.
    """
    from search.embedders import get_embedder  # torch stays out of the web process until needed

    batch = IndexBatch.objects.select_related("job").filter(pk=batch_id).first()
    if batch is None or batch.done or batch.job.state in IndexJob.TERMINAL:
        return
    job = batch.job
    IndexJob.objects.filter(pk=job.pk, state=IndexJob.State.QUEUED).update(
        state=IndexJob.State.RUNNING, started_at=timezone.now()
    )
    embedder = get_embedder(job.model)
    items: list[Product | GalleryImage] = [
        *Product.objects.filter(pk__in=batch.product_ids),
        *GalleryImage.objects.filter(pk__in=batch.gallery_ids),
    ]
    if job.mode == IndexJob.Mode.MISSING:
        existing = Embedding.objects.filter(model=job.model).filter(
            Q(product__in=batch.product_ids) | Q(gallery_image__in=batch.gallery_ids)
        )
        current = {
            ("product", product) if product else ("gallery_image", gallery): sha256
            for product, gallery, sha256 in existing.values_list("product_id", "gallery_image_id", "sha256")
        }
        items = [item for item in items if current.get(_item_key(item)) != item.sha256]

    def prepare(item: Product | GalleryImage) -> object:
        try:
            return embedder.preprocess_bytes(_load(item))
        except Exception as error:  # noqa: BLE001 - a bad file fails its item, not the job
            return error

    with ThreadPoolExecutor(max_workers=settings.EMBEDDING_DECODE_THREADS) as pool:
        prepared = list(pool.map(prepare, items))
    failures = [
        {"type": _item_key(item)[0], "id": item.pk, "error": str(result)[:300]}
        for item, result in zip(items, prepared, strict=True)
        if isinstance(result, Exception)
    ]
    good = [(item, tensor) for item, tensor in zip(items, prepared, strict=True) if not isinstance(tensor, Exception)]
    vectors = embedder.embed_preprocessed([tensor for _, tensor in good])
    rows = [
        Embedding(
            product=item if isinstance(item, Product) else None,
            gallery_image=item if isinstance(item, GalleryImage) else None,
            model=job.model,
            vector=vector,
            sha256=item.sha256,
        )
        for (item, _), vector in zip(good, vectors, strict=True)
    ]
    with transaction.atomic():
        locked = IndexBatch.objects.select_for_update().filter(pk=batch_id, done=False).first()
        if locked is None:
            return  # another delivery of this batch got here first
        embedding_upsert(rows=rows)
        locked.done, locked.failures = True, failures
        locked.save(update_fields=["done", "failures"])
        size = len(batch.product_ids) + len(batch.gallery_ids)
        IndexJob.objects.filter(pk=job.pk).update(
            done=F("done") + size - len(failures), failed=F("failed") + len(failures)
        )
        IndexJob.objects.filter(pk=job.pk, state=IndexJob.State.RUNNING, done__gte=F("total") - F("failed")).update(
            state=IndexJob.State.SUCCEEDED, finished_at=timezone.now()
        )


def embedding_upsert(*, rows: Sequence[Embedding]) -> None:
    """Insert or replace vectors, keyed by (item, model)."""
    products = [row for row in rows if row.product is not None]
    gallery = [row for row in rows if row.gallery_image is not None]
    for subset, field in ((products, "product"), (gallery, "gallery_image")):
        if subset:
            Embedding.objects.bulk_create(
                subset, update_conflicts=True, unique_fields=[field, "model"], update_fields=["vector", "sha256"]
            )


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
