"""Index jobs: the models being indexed, the jobs, their failures and their progress."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import QuerySet

from search.items import PRODUCT
from search.models import IndexBatch, IndexJob
from search.selectors.embedding_models import active_model_key
from simsite.sse import row_updates


def models_being_indexed() -> set[str]:
    """The active model plus every model a job is building right now."""
    building = IndexJob.objects.exclude(state__in=IndexJob.TERMINAL).values_list("model", flat=True).distinct()
    return {active_model_key(), *building}


def index_job_get(*, pk: int) -> IndexJob:
    return IndexJob.objects.get(pk=pk)


def index_job_list() -> QuerySet[IndexJob]:
    """Newest first (paged by the API; finished jobs are pruned after JOB_RETENTION_DAYS)."""
    return IndexJob.objects.all()


def index_job_failures(*, job: IndexJob, limit: int = 50) -> list[dict[str, object]]:
    """The first failed items of a job: [{"type", "id", "error"}]."""
    failures: list[dict[str, object]] = []
    for batch in job.batches.exclude(failures=[]).order_by("number").values_list("failures", flat=True):
        failures.extend(batch)
        if len(failures) >= limit:
            break
    return failures[:limit]


def index_job_for_items(*, kind: str, ids: list[int]) -> IndexJob | None:
    """The newest job of the active model that embeds any of these items."""
    if not ids:
        return None
    column = "product_ids" if kind == PRODUCT.name else "gallery_ids"
    # The job was made by the write that just happened: look among the newest jobs only,
    # not through every batch on record.
    recent = IndexJob.objects.filter(model=active_model_key()).order_by("-pk").values("pk")[:20]
    batches = IndexBatch.objects.filter(**{f"{column}__overlap": ids}, job__in=recent)
    return IndexJob.objects.filter(pk__in=batches.values("job_id")).order_by("-pk").first()


def index_job_updates(job_id: int) -> Iterator[IndexJob]:
    """The job each time its progress or state changes, until it ends."""
    return row_updates(
        lambda: IndexJob.objects.filter(pk=job_id).first(),
        is_finished=lambda job: job.state in IndexJob.TERMINAL,
        signature=lambda job: (job.state, job.total, job.done, job.failed),
    )
