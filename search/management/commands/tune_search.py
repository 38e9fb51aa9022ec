from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from search.selectors.embedding_models import active_model_key
from search.services.tuning import search_tune
from simsite.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Measure the hnsw.ef_search at which a model's index reaches the target recall@10 against an exact "
        "search, and make searches use it (Celery beat does it too as an index grows)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--model", help="embedding model key (default: the active model)")
        parser.add_argument("--recall", type=float, help="target recall@10, 0-1 (default: SEARCH_TUNE_RECALL_PERCENT)")
        parser.add_argument("--queries", type=int, help="newest recorded queries used (default: SEARCH_TUNE_QUERIES)")

    def handle(self, *args: Any, model: str | None, recall: float | None, queries: int | None, **options: Any) -> None:
        if queries is not None and queries < 1:
            raise CommandError("--queries must be at least 1")
        started = time.monotonic()
        try:
            tuning = search_tune(model=model or active_model_key(), target_recall=recall, queries=queries)
        except ServiceError as error:
            raise CommandError(error.message) from None
        self.stdout.write(f"{tuning.model}: {tuning.vectors:,} vectors, {tuning.queries} queries, "
                          f"target recall@10 {tuning.target_recall:.3f}")  # fmt: skip
        self.stdout.write(f"{'ef_search':>9} {'recall@10':>9} {'at least':>8} {'p50 ms':>7}")
        for step in tuning.steps:
            self.stdout.write(f"{step['ef_search']:>9} {step['recall']:>9.3f} {step['recall_low']:>8.3f} "
                              f"{step['p50_ms']:>7.2f}")  # fmt: skip
        seconds = time.monotonic() - started
        summary = f"searches of {tuning.model} now run with hnsw.ef_search {tuning.ef_search} ({seconds:.1f}s)"
        if tuning.steps[-1]["recall_low"] < tuning.target_recall:
            self.stdout.write(self.style.WARNING(f"{summary}; the target recall was not reached"))
        else:
            self.stdout.write(self.style.SUCCESS(summary))
