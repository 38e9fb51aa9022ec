"""Celery tasks: thin, idempotent, taking ids (see search/services.py for the work)."""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError, InterfaceError

from search import services
from simsite.errors import ServiceError

_TRANSIENT = (DatabaseError, InterfaceError, OSError)


@shared_task(acks_late=True, autoretry_for=_TRANSIENT, max_retries=3, retry_backoff=True)
def index_job_plan(job_id: int) -> None:
    services.index_job_plan(job_id=job_id)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, queue="embed", max_retries=3, soft_time_limit=600)
def embed_batch(self, batch_id: int) -> None:
    """Embed one batch (queue ``embed``: GPU workers). Safe to run twice."""
    try:
        services.index_batch_run(batch_id=batch_id)
    except ServiceError as error:  # weights missing, no CUDA, ...: retrying will not help
        job_id = services.IndexBatch.objects.filter(pk=batch_id).values_list("job_id", flat=True).first()
        if job_id:
            services.index_job_fail(job_id=job_id, error=error.message)
    except _TRANSIENT as error:
        if self.request.retries >= self.max_retries:
            job_id = services.IndexBatch.objects.filter(pk=batch_id).values_list("job_id", flat=True).first()
            if job_id:
                services.index_job_fail(job_id=job_id, error=f"batch {batch_id} kept failing: {error}")
            raise
        raise self.retry(exc=error, countdown=2**self.request.retries) from error


@shared_task(queue="embed", soft_time_limit=60)
def embed_query(model: str, images_b64: list[str]) -> list[list[float]]:
    """Embed query images on an embed worker (``SEARCH_QUERY_EMBEDDER=worker``)."""
    import base64

    from search.querying import embed_locally

    vectors = embed_locally(model=model, images=[base64.b64decode(data) for data in images_b64])
    return vectors.tolist()
