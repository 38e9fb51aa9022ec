"""Celery tasks: thin, idempotent, taking ids (see search/services/ for the work)."""

from __future__ import annotations

import base64
import logging

from celery import shared_task
from celery.signals import task_received, worker_ready
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from search.querying import embed_locally
from search.services import duplicates, indexing, reconciler, trained_models, tuning
from simsite.celery import task_send
from simsite.errors import ServiceError, failure_reason

logger = logging.getLogger(__name__)

# Errors a later try may not meet: the database restarting, a dropped connection. Not the rest
# of DatabaseError: an IntegrityError, a ProgrammingError or a DataError is a bug or bad data,
# and would fail the same way on every try (the batch or scan must fail with its reason instead).
_TRANSIENT = (OperationalError, InterfaceError)


@shared_task(acks_late=True, autoretry_for=_TRANSIENT, max_retries=3, retry_backoff=True)
def index_job_plan(job_id: int) -> None:
    indexing.index_job_plan(job_id=job_id)


@shared_task(
    bind=True, acks_late=True, reject_on_worker_lost=True, queue="embed", max_retries=3,
    soft_time_limit=settings.EMBEDDING_BATCH_SOFT_TIME_LIMIT, time_limit=settings.EMBEDDING_BATCH_SOFT_TIME_LIMIT + 60,
)  # fmt: skip
def embed_batch(self, batch_id: int) -> None:
    """Embed one batch (queue ``embed``: GPU workers). Safe to run twice; always ends.

    Weights missing or no CUDA: the job fails (no retry helps). A database hiccup: retried a
    few times. Anything else (a time limit, CUDA out of memory, a bug): the batch's items
    fail with the reason and the job moves on. A worker that dies is bounded by the attempt
    count in ``indexing.index_batch_run``.
    """
    try:
        indexing.index_batch_run(batch_id=batch_id, worker=self.request.hostname or "")
    except ServiceError as error:
        _after_error()
        indexing.index_batch_job_fail(batch_id=batch_id, error=error.message)
    except _TRANSIENT as error:
        _after_error()
        if self.request.retries < self.max_retries:
            raise self.retry(exc=error, countdown=2**self.request.retries) from error
        indexing.index_batch_fail(batch_id=batch_id, error=f"database error: {type(error).__name__}")
    except Exception as error:  # noqa: BLE001 - every failure must end the batch, whatever it is
        logger.exception("batch %s failed", batch_id)
        _after_error()
        indexing.index_batch_fail(batch_id=batch_id, error=failure_reason(error))


@task_received.connect(dispatch_uid="search.batch_received")
def batch_received(sender: object, request: object, **kwargs: object) -> None:
    """A batch's message reached this worker: the batch names it from now on, not only once it
    starts, so that a worker killed while holding it also resumes it when it restarts."""
    if getattr(request, "name", None) != embed_batch.name or not request.args:
        return
    try:
        indexing.index_batch_received(batch_id=request.args[0], worker=request.hostname or "")
    except Exception:  # noqa: BLE001 - the batch still runs; only a quick resume after a crash is lost
        logger.exception("could not record the worker of batch %s", request.args[0])


@worker_ready.connect(dispatch_uid="search.resume_batches")
def resume_batches(sender: object, **kwargs: object) -> None:
    """A worker starting under a name a dead worker had: that worker's unfinished batches go out again now
    (``indexing.index_batches_resume``), not after Redis's visibility timeout."""
    hostname = getattr(sender, "hostname", "")
    try:
        resent = indexing.index_batches_resume(worker=hostname)
    except Exception:  # noqa: BLE001 - the reconciler still finds them later; the worker must start
        logger.exception("could not resume the batches of the previous %s", hostname)
        return
    if resent:
        logger.warning("%s: sent again %d batches its previous run left unfinished", hostname, resent)


def _after_error() -> None:
    """Leave the connection usable for recording the failure (a broken one is reopened)."""
    if connection.connection is not None and (connection.needs_rollback or not connection.is_usable()):
        connection.close()
    close_old_connections()


@shared_task(queue="query", ignore_result=False, soft_time_limit=60)
def embed_query(model: str, images_b64: list[str]) -> list[list[float]]:
    """Embed query images on a worker (``SEARCH_QUERY_EMBEDDER=worker``)."""
    vectors = embed_locally(model=model, images=[base64.b64decode(data) for data in images_b64])
    return vectors.tolist()


@shared_task(queue="default", soft_time_limit=600)
def reconcile() -> dict[str, int]:
    """Periodic (Celery beat): see ``reconciler.index_reconcile``."""
    report = reconciler.index_reconcile()
    if any(report.values()):
        logger.info("reconcile: %s", report)
    return report


@shared_task(
    queue="embed", acks_late=False,
    soft_time_limit=settings.EMBEDDING_TRAINING_TIME_LIMIT, time_limit=settings.EMBEDDING_TRAINING_TIME_LIMIT + 120,
)  # fmt: skip
def model_train(trained_id: int) -> None:
    """Train a queued embedding model (queue ``embed``: GPU workers). A second delivery finds
    it claimed and does nothing; a worker killed mid-run is found by ``reconcile``."""
    trained_models.model_training_run(trained_id=trained_id)


@shared_task(acks_late=True, autoretry_for=_TRANSIENT, max_retries=3, retry_backoff=True)
def duplicate_scan_chunk(scan_id: int) -> None:
    """One chunk of a background duplicates scan, then the next chunk's message."""
    try:
        more = duplicates.duplicate_scan_run(scan_id=scan_id)
    except _TRANSIENT:
        raise
    except Exception as error:  # noqa: BLE001 - a scan must end, whatever stops it
        logger.exception("duplicates scan %s failed", scan_id)
        _after_error()
        duplicates.duplicate_scan_fail(scan_id=scan_id, error=failure_reason(error))
        return
    if more:
        task_send(duplicates.SCAN_TASK, scan_id)


@shared_task(queue="default", soft_time_limit=3600, time_limit=3660)
def search_tune_due() -> dict[str, int]:
    """Periodic (Celery beat): see ``tuning.search_tune_due``."""
    tuned = tuning.search_tune_due()
    if tuned:
        logger.info("tuned hnsw.ef_search: %s", tuned)
    return tuned
