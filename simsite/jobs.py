"""One lifecycle for the background jobs: index jobs (``search.IndexJob``), CSV imports
(``catalog.ProductImport``) and duplicate scans (``search.DuplicateScan``).

A job is a row with a state — queued, then running, then succeeded, failed or cancelled — what it
has done, why it failed, and when it was created, started and finished. Every change of state is
one conditional UPDATE from the states it may come from, so the database decides races: of two
deliveries of one message only one claims the job, and a job cancelled meanwhile is not then
marked succeeded. The periodic reconcilers end the jobs that stopped progressing (``stalled``) and
send again the messages of queued work while its queue is empty (``queue_drained``).

Training runs (``simsite/training_runs.py``) follow the same steps with their own fields
(``status``, ``progress``, ``message``), and the same lost-message check.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from django.db import models
from django.db.models import Q
from django.utils import timezone

from simsite.celery import queue_length
from simsite.errors import ServiceError


class JobState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (JobState.QUEUED, JobState.RUNNING)
TERMINAL = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def queue_drained(queue: str) -> bool:
    """Nothing waits in ``queue``: work sent a while ago and still not started lost its message
    (Redis restarted, a purge) and may be sent again. False while the broker cannot say, so
    nothing is sent twice on a guess."""
    return queue_length(queue) == 0


class JobQuerySet(models.QuerySet):
    def active(self) -> JobQuerySet:
        return self.filter(state__in=ACTIVE)

    def finished_before(self, when: Any) -> JobQuerySet:
        """Ended jobs that finished before ``when`` (what the reconciler prunes)."""
        return self.filter(state__in=TERMINAL, finished_at__lt=when)

    def stalled(self, *, seconds: int, now: Any = None) -> JobQuerySet:
        """Active jobs with no progress (``progressed_at``, or since they were created) for ``seconds``."""
        since = (now or timezone.now()) - timedelta(seconds=seconds)
        return self.active().filter(Q(progressed_at__lt=since) | Q(progressed_at__isnull=True, created_at__lt=since))

    def claim(self, *, states: tuple[str, ...] = (JobState.QUEUED,), **fields: Any) -> int:
        """Make the jobs of this queryset that are in ``states`` running, with ``fields``
        (``started_at`` now unless given), in one conditional UPDATE; returns how many it took."""
        fields = {"started_at": timezone.now(), **fields}
        return self.filter(state__in=states).update(state=JobState.RUNNING, **fields)

    def end(self, state: str, **fields: Any) -> int:
        """End the active jobs of this queryset in ``state``, finished now, with ``fields``;
        returns how many ended (none that had ended already)."""
        return self.active().update(state=state, finished_at=timezone.now(), **fields)


JobT = TypeVar("JobT", bound="Job")


class Job(models.Model):
    """The fields and lifecycle every job shares. A job model adds what it counts (``total``,
    ``failed``, ...) and says what ``percent`` reads by overriding ``progress_counts``."""

    State = JobState
    ACTIVE = ACTIVE
    TERMINAL = TERMINAL

    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED, db_index=True)
    done = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]

    def progress_counts(self) -> tuple[int, int | None]:
        """(units processed, units in all; None while not counted yet)."""
        return self.done, getattr(self, "total", None)

    @property
    def percent(self) -> float:
        """0 to 100: 100 once it succeeded, 0 while there is nothing counted."""
        if self.state == JobState.SUCCEEDED:
            return 100.0
        processed, total = self.progress_counts()
        if not total:
            return 0.0
        return round(100.0 * min(processed, total) / total, 1)


def job_cancel(job: JobT, *, code: str, what: str, **fields: Any) -> JobT:
    """Stop a queued or running job (a running one notices at its next step), with ``fields``;
    cancelling a cancelled job again is no error, one that ended otherwise is a 409 ``code``."""
    cancelled = type(job).objects.filter(pk=job.pk).end(JobState.CANCELLED, **fields)
    job.refresh_from_db()
    if not cancelled and job.state != JobState.CANCELLED:
        raise ServiceError(code, f"{what} {job.pk} has already {job.state}.", status_code=409)
    return job
