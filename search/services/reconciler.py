"""The reconciler: the periodic sweep that makes lost messages, dead workers and stuck jobs
harmless."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from catalog.csv_import import product_imports_prune, product_imports_reconcile
from search.items import KINDS
from search.models import Embedding, EmbeddingFailure, IndexBatch, IndexJob
from search.selectors.embedding_models import model_spec_get
from search.selectors.jobs import models_being_indexed
from search.services.activation import embedding_index_ensure
from search.services.indexing import (
    index_batch_fail,
    index_batches_send,
    index_job_fail,
    index_job_plan,
    items_index_job_create,
)
from search.services.locks import model_locked, session_lock
from search.services.trained_models import trained_models_reconcile
from simsite.jobs import queue_drained
from simsite.stored_files import orphan_files_sweep

logger = logging.getLogger(__name__)

# Work recorded less than this long ago may still be on its way to the broker (on_commit).
_GRACE = timedelta(seconds=10)


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
        model_locked(model)
        items_index_job_create(model=model, product_ids=missing["product"], gallery_ids=missing["gallery_image"])
    return len(missing["product"]) + len(missing["gallery_image"])


def index_reconcile() -> dict[str, int]:
    """The periodic sweep (Celery beat, every RECONCILE_INTERVAL_SECONDS) that makes lost
    messages, dead workers and stuck jobs harmless. Safe to run at any time, twice at once
    included (one run at a time; the other returns at once)."""
    with session_lock("search-reconcile") as taken:
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
        pruned = IndexJob.objects.finished_before(before).delete()
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
    pending = IndexBatch.objects.filter(done=False, job__state__in=IndexJob.ACTIVE)
    lost = Q(dispatched_at__isnull=True, created_at__lt=now - _GRACE)
    # Redis gives a dead worker's batch to another worker after the visibility timeout; a
    # batch started long before that and still not done lost its message (e.g. Redis restarted).
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    lost |= Q(attempts__gt=0, started_at__lt=now - timedelta(seconds=visibility * 2))
    if queue_drained("embed"):
        # Sent, never started, and nothing waits in the queue: the message is gone.
        resend_after = timedelta(seconds=settings.EMBEDDING_BATCH_RESEND_SECONDS)
        lost |= Q(attempts=0, dispatched_at__lt=now - resend_after)
    return index_batches_send(batch_ids=list(pending.filter(lost).order_by("pk").values_list("pk", flat=True)))


def _stalled_jobs_end(now: datetime, report: dict[str, int]) -> int:
    """End the jobs without progress for INDEX_JOB_STALL_SECONDS, their remaining items failed,
    each on its own; returns how many were ended."""
    stalled = IndexJob.objects.stalled(seconds=settings.INDEX_JOB_STALL_SECONDS, now=now)
    ended = 0
    reason = f"the job made no progress for {settings.INDEX_JOB_STALL_SECONDS} s"
    for job in stalled:
        with _isolated(report, "ending stalled job %s", job.pk):
            for batch_id in job.batches.filter(done=False).values_list("pk", flat=True):
                index_batch_fail(batch_id=batch_id, error=reason)
            index_job_fail(job_id=job.pk, error=reason)
            ended += 1
    return ended
