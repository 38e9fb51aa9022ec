from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from search.models import Collection, IndexJob
from search.services.indexing import index_job_create
from simsite.errors import ServiceError


class Command(BaseCommand):
    help = "Embed a collection with a model in the background (Celery workers) and follow its progress."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--collection", choices=Collection.values, default=Collection.ALL)
        parser.add_argument("--model", help="embedding model key (default: the active model)")
        parser.add_argument("--mode", choices=IndexJob.Mode.values, default=IndexJob.Mode.MISSING)
        parser.add_argument("--async", dest="no_wait", action="store_true", help="queue the job and return")
        parser.add_argument("--timeout", type=float, default=0, help="give up waiting after this many seconds")

    def handle(self, *args: Any, collection: str, model: str | None, mode: str, no_wait: bool, timeout: float,
               **options: Any) -> None:  # fmt: skip
        try:
            job = index_job_create(collection=collection, model=model, mode=mode)
        except ServiceError as error:
            raise CommandError(error.message) from None
        self.stdout.write(f"index job {job.pk}: {collection} with {job.model} ({mode})")
        if no_wait:
            return
        started = time.monotonic()
        with tqdm(total=None, unit="img", file=sys.stderr, disable=options.get("verbosity", 1) == 0) as bar:
            while True:
                job.refresh_from_db()
                bar.total = job.total or None
                bar.n = job.done + job.failed
                bar.refresh()
                if job.state in IndexJob.TERMINAL:
                    break
                if timeout and time.monotonic() - started > timeout:
                    raise CommandError(f"job {job.pk} still {job.state} after {timeout:.0f}s; it keeps running")
                time.sleep(0.5)
        summary = f"job {job.pk} {job.state}: {job.done} embedded, {job.failed} failed of {job.total}"
        if job.state != IndexJob.State.SUCCEEDED:
            raise CommandError(f"{summary}. {job.error}".strip())
        self.stdout.write(self.style.SUCCESS(summary))
