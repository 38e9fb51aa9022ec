from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from catalog.fetch import image_fetch
from catalog.images import image_validate, read_limited
from search.models import Collection
from search.querying import query_vectors
from search.selectors.embedding_models import active_model_key, model_spec_get
from search.selectors.neighbours import items_similar_to
from simsite.errors import ServiceError


class Command(BaseCommand):
    help = "Find the items most similar to an image file or URL and print them as a table."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("image", help="path to an image file, or an http(s) URL")
        parser.add_argument("--k", type=int, default=6)
        parser.add_argument("--collection", choices=Collection.values, default=Collection.ALL)
        parser.add_argument("--threshold", type=float, default=None, help="minimum cosine similarity (-1..1)")
        parser.add_argument("--category", action="append", default=[])
        parser.add_argument("--model", help="embedding model (default: the active one)")
        parser.add_argument("--exact", action="store_true", help="exact scan instead of the HNSW index")

    def handle(self, *args: Any, image: str, k: int, collection: str, threshold: float | None, category: list[str],
               model: str | None, exact: bool, **options: Any) -> None:  # fmt: skip
        if not 1 <= k <= 100:
            raise CommandError("--k must be between 1 and 100")
        try:
            key = model_spec_get(model or active_model_key()).key
            if image.startswith(("http://", "https://")):
                query = image_fetch(url=image)
            else:
                path = Path(image)
                if not path.is_file():
                    raise CommandError(f"{image} is not a file")
                with path.open("rb") as handle:
                    query = image_validate(data=read_limited(handle), filename=path.name)
            vector = query_vectors(model=key, images=[query.data])[0]
        except ServiceError as error:
            raise CommandError(error.message) from None
        matches = items_similar_to(
            vector=vector, model=key, collection=collection, k=k, threshold=threshold, categories=category, exact=exact,
            with_items=True,
        )  # fmt: skip
        self.stdout.write(f"{'rank':>4}  {'similarity':>10}  {'type':<13} {'id':>6}  item")
        for rank, match in enumerate(matches, start=1):
            item = match.item
            if match.ref.kind == "product":
                label = f"{item.sku}  {item.name}  [{item.category}]  {item.price}"
            else:
                label = item.original_filename
            ref = match.ref
            self.stdout.write(f"{rank:>4}  {match.similarity:>10.4f}  {ref.kind:<13} {ref.id:>6}  {label}")
        if not matches:
            self.stdout.write(f"no match (model {key})")
