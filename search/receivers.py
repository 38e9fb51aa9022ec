"""The one place where a catalog write turns into embedding work."""

from __future__ import annotations

from django.dispatch import receiver

from catalog.signals import images_changed
from search.services.indexing import items_index


@receiver(images_changed, dispatch_uid="search.index_changed_images")
def index_changed_images(*, product_ids: list[int], gallery_ids: list[int], **kwargs: object) -> None:
    """Record the embedding of new or changed images in the writer's transaction."""
    items_index(product_ids=product_ids, gallery_ids=gallery_ids)
