"""The one job lifecycle (simsite/jobs.py) that index jobs, CSV imports and duplicate scans share."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.models import ProductImport
from search.models import DuplicateScan, IndexJob
from simsite import jobs
from simsite.errors import ServiceError
from simsite.jobs import job_cancel, queue_drained
from tests.factories import IndexJobFactory, ProductImportFactory


def test_percent_counts_what_each_kind_of_job_processes():
    assert IndexJob(total=10, done=3, failed=2).percent == 50.0  # failed items are processed too
    assert IndexJob(total=0).percent == 0.0 and IndexJob(total=0, state="succeeded").percent == 100.0
    assert ProductImport(total=None, done=5).percent == 0.0 and ProductImport(total=8, done=2).percent == 25.0
    assert ProductImport(total=8, done=7, state="succeeded").percent == 100.0
    assert DuplicateScan(vectors_count=4, done=9).percent == 100.0  # vectors added since the scan began


def test_a_broker_that_cannot_say_is_not_an_empty_queue(monkeypatch):
    monkeypatch.setattr(jobs, "queue_length", lambda queue: None)
    assert not queue_drained("embed")
    monkeypatch.setattr(jobs, "queue_length", lambda queue: 0)
    assert queue_drained("embed")


@pytest.mark.django_db
def test_a_job_is_claimed_once_ended_once_and_cancelled_only_while_active():
    job = IndexJobFactory()
    assert IndexJob.objects.filter(pk=job.pk).claim() == 1 and IndexJob.objects.filter(pk=job.pk).claim() == 0
    assert IndexJob.objects.filter(pk=job.pk).end("succeeded") == 1
    assert IndexJob.objects.filter(pk=job.pk).end("failed", error="late") == 0
    job.refresh_from_db()
    assert (job.state, job.error) == ("succeeded", "") and job.started_at <= job.finished_at
    with pytest.raises(ServiceError) as refused:
        job_cancel(job, code="job_finished", what="Job")
    assert refused.value.code == "job_finished" and refused.value.status_code == 409
    imported = job_cancel(ProductImportFactory(), code="import_finished", what="Import", lease_until=None)
    assert imported.state == "cancelled" and job_cancel(imported, code="x", what="Import").state == "cancelled"


@pytest.mark.django_db
def test_stalled_and_prunable_jobs():
    old = timezone.now() - timedelta(hours=2)
    silent, fresh, ended = IndexJobFactory(), IndexJobFactory(), IndexJobFactory(state="failed", finished_at=old)
    IndexJob.objects.filter(pk=silent.pk).update(created_at=old)
    assert list(IndexJob.objects.stalled(seconds=3600)) == [silent] and fresh not in IndexJob.objects.stalled(seconds=1)
    assert list(IndexJob.objects.finished_before(timezone.now() - timedelta(hours=1))) == [ended]
