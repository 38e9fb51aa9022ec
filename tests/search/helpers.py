from __future__ import annotations

from catalog.images import image_validate
from catalog.models import GalleryImage, Product
from catalog.services import gallery_image_create, product_create
from search.models import IndexBatch, IndexJob
from search.services import index_batch_run, items_index


def index_now(*, product_ids=(), gallery_ids=()) -> IndexJob | None:
    """Embed items in this process, running the same batches a worker would."""
    job = items_index(product_ids=list(product_ids), gallery_ids=list(gallery_ids))
    for batch in IndexBatch.objects.filter(done=False).order_by("pk"):
        index_batch_run(batch_id=batch.pk)
    return job


def add_product(data: bytes, sku: str, *, category: str = "misc", price: str = "10.00", name: str = "") -> Product:
    image = image_validate(data=data, filename=f"{sku}.jpg")
    return product_create(sku=sku, name=name or sku, category=category, price=price, image=image, index=False)


def add_gallery_image(data: bytes, filename: str) -> GalleryImage:
    return gallery_image_create(image=image_validate(data=data, filename=filename), original_filename=filename)
