"""The lifecycle of a training run, shared by the embedding models trained here
(``search.TrainedModel``) and the signature encoders (``signatures.SignatureEncoder``).

A run is a row with ``status`` (queued, running, succeeded, failed), ``progress``, ``message``,
``updated_at`` and ``finished_at`` (the abstract ``TrainingRun``, with what a trained model keeps:
weights, metrics, curves, plots). A worker claims a queued run with a conditional update (a
second delivery of the task does nothing), trains it, and ends it as failed with the reason
whatever goes wrong, deleting the files it had saved. The periodic reconciler fails a run whose
worker stopped reporting, and re-sends a queued run whose message was lost.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.core.files.storage import default_storage
from django.db import IntegrityError, models, transaction
from django.db.models import Model
from django.utils import timezone

from simsite.celery import task_send
from simsite.errors import ServiceError, failure_reason
from simsite.jobs import queue_drained

logger = logging.getLogger(__name__)


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


QUEUED, RUNNING, SUCCEEDED, FAILED = RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.FAILED
# A queued run older than this, with nothing in its queue, lost its message.
LOST_AFTER_SECONDS = 60


class TrainingRun(models.Model):
    """The fields every training run has: its lifecycle, and the model it leaves (weights and
    plots as storage names, evaluation metrics, learning curves). A kind of run adds its key,
    its data and what else it learns."""

    Status = RunStatus

    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    progress = models.FloatField(default=0.0)
    message = models.CharField(max_length=300, blank=True, help_text="What it is doing, or why it failed")
    fingerprint = models.CharField(max_length=64, blank=True)
    config = models.JSONField(default=dict, help_text="Training settings (epochs, dimension, seed, ...)")
    dim = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    curves = models.JSONField(default=dict, blank=True)
    weights = models.CharField(max_length=255, blank=True, help_text="Weights file (storage name)")
    plots = models.JSONField(default=dict, blank=True, help_text="Plot name -> storage name")
    seconds = models.FloatField(null=True, blank=True)
    activate_when_done = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]

    # Where a kind of run keeps its files (a folder of simsite.stored_files.STORED_FOLDERS).
    files_root: str = ""

    def files_folder(self) -> str:
        """Where this run saves its files: ``<files_root>/<key>/<run>/``. A folder of its own per
        run, never reused: a key can be deleted and trained again, and processes that loaded the
        old model by its storage names (``search.embedders``, ``signatures.encoders``) must not
        take the new files for it."""
        return f"{self.files_root}/{self.key}/{self.pk}-{uuid.uuid4().hex[:8]}"


def training_run_create(model: type[Model], *, fields: dict[str, Any], what: str) -> Any:
    """Record a queued run from validated ``fields``. Two runs asking for the same key at once
    both pass the key check: the unique key decides, and the second is told as the check would
    have told it (409 ``duplicate_key``), not with a 500."""
    try:
        with transaction.atomic():
            return model.objects.create(**fields)
    except IntegrityError:
        raise ServiceError("duplicate_key", f"{what} '{fields['key']}' exists already.", field="key",
                           status_code=409) from None  # fmt: skip


def training_run_touch(model: type[Model], *, pk: int, **fields: object) -> None:
    """Record progress (``fields``) and that the worker is alive."""
    model.objects.filter(pk=pk).update(updated_at=timezone.now(), **fields)


def training_run_fail(model: type[Model], *, pk: int, error: str) -> None:
    model.objects.filter(pk=pk, status__in=[QUEUED, RUNNING]).update(
        status=FAILED, message=error[:300], finished_at=timezone.now(), updated_at=timezone.now()
    )


def training_run_execute(
    model: type[Model], *, pk: int, first_message: str, train: Callable[[Any, list[str]], None]
) -> Any:
    """Claim the queued run ``pk`` and ``train(run, saved)`` it; ``train`` appends the storage
    names it writes to ``saved`` (deleted if the run fails, kept if it had already been marked
    succeeded: the model's files). None if the run was not queued."""
    claimed = model.objects.filter(pk=pk, status=QUEUED).update(
        status=RUNNING, progress=0.0, message=first_message, updated_at=timezone.now()
    )
    if not claimed:
        return None
    run = model.objects.get(pk=pk)
    saved: list[str] = []
    try:
        train(run, saved)
    except Exception as error:  # noqa: BLE001 - every failure must end the run, whatever it is
        if not isinstance(error, ServiceError):
            logger.exception("training run %s (%s) failed", run.pk, model.__name__)
        training_run_fail(model, pk=pk, error=failure_reason(error))
        if model.objects.filter(pk=pk, status=SUCCEEDED).exists():
            # It failed after the commit that made it a model: the files are the model's now.
            logger.error("training run %s (%s) failed after it succeeded; its files are kept", run.pk,
                         model.__name__)  # fmt: skip
        else:
            for name in saved:
                default_storage.delete(name)
    run.refresh_from_db()
    return run


def training_runs_reconcile(model: type[Model], *, stall_seconds: int, task: str, queue: str) -> tuple[int, int]:
    """Fail the runs whose worker stopped reporting for ``stall_seconds`` (killed, out of
    memory); re-send ``task`` for queued runs whose message is gone (nothing waits in
    ``queue``). Returns (stalled, resent)."""
    now = timezone.now()
    stalled = 0
    silent = model.objects.filter(status=RUNNING, updated_at__lt=now - timedelta(seconds=stall_seconds))
    for pk in silent.values_list("pk", flat=True):
        training_run_fail(model, pk=pk, error=f"the worker stopped reporting progress for {stall_seconds} s "
                          "(killed?); start the training again")  # fmt: skip
        stalled += 1
    resent = 0
    if queue_drained(queue):
        lost = model.objects.filter(status=QUEUED, updated_at__lt=now - timedelta(seconds=LOST_AFTER_SECONDS))
        for pk in lost.values_list("pk", flat=True):
            if task_send(task, pk):
                training_run_touch(model, pk=pk)
                resent += 1
    return stalled, resent
