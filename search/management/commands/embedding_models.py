from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from search.selectors.embedding_models import embedding_model_list


class Command(BaseCommand):
    help = "List the embedding models with their dimension and how many items have their vectors."

    def handle(self, *args: Any, **options: Any) -> None:
        rows = embedding_model_list()
        self.stdout.write(f"{'model':<20} {'dim':>5} {'active':>6} {'embedded':>9} {'missing':>8}  description")
        for row in rows:
            active = "*" if row["active"] else ""
            self.stdout.write(
                f"{row['key']:<20} {row['dim']:>5} {active:>6} {row['embedded']:>9} {row['missing']:>8}  "
                f"{row['description']}"
            )
