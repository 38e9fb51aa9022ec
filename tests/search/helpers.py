from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from django.db import connection

from catalog.images import image_validate
from catalog.models import GalleryImage, Product
from search.models import Embedding, IndexBatch, IndexJob, hnsw_index_name, hnsw_index_sql
from search.services.indexing import index_batch_run, items_index
from tests import images
from tests.factories import EmbeddingFactory, GalleryImageFactory, ProductFactory


def index_now(*, product_ids=(), gallery_ids=()) -> IndexJob | None:
    """Embed items in this process, running the same batches a worker would."""
    job = items_index(product_ids=list(product_ids), gallery_ids=list(gallery_ids))
    for batch in IndexBatch.objects.filter(done=False).order_by("pk"):
        index_batch_run(batch_id=batch.pk)
    return job


def add_product(data: bytes, sku: str, *, category: str = "misc", price: str = "10.00", name: str = "") -> Product:
    return ProductFactory(data=data, sku=sku, name=name or sku, category=category, price=price)


def add_gallery_image(data: bytes, filename: str) -> GalleryImage:
    return GalleryImageFactory(data=data, original_filename=filename)


class FakeEmbedder:
    """A deterministic stand-in for the model where the model is not what is tested: the
    vector is a pseudo-random unit vector seeded by the image's bytes."""

    def __init__(self, key: str = "efficientnet_lite0", dim: int = 1280, fail: Exception | None = None):
        self.key, self.dim, self.fail = key, dim, fail
        self.forward_batch = 16
        self.before_embed = None  # a test's hook, run inside embed_preprocessed

    def preprocess(self, image) -> bytes:
        return image.tobytes()

    def preprocess_bytes(self, data: bytes) -> bytes:
        image_validate(data=data)  # undecodable files fail as they would with the model
        return data

    def embed_preprocessed(self, items: list[bytes]) -> np.ndarray:
        if self.before_embed is not None:
            self.before_embed()
        if self.fail is not None:
            raise self.fail
        rows = []
        for data in items:
            seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
            vector = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            rows.append(vector / np.linalg.norm(vector))
        return np.asarray(rows, dtype=np.float32).reshape(len(items), self.dim)

    def embed_images(self, images: list) -> np.ndarray:
        return self.embed_preprocessed([image.tobytes() for image in images])

    def embed_bytes(self, datas: list[bytes]) -> np.ndarray:
        return self.embed_preprocessed(list(datas))

    def embed_encoded(self, datas: list[bytes], *, threads: int = 1) -> list[np.ndarray | Exception]:
        results: list[object] = []
        for data in datas:
            try:
                results.append(self.preprocess_bytes(data))
            except Exception as error:  # noqa: BLE001 - as the real embedder: a bad file fails alone
                results.append(error)
        good = [i for i, result in enumerate(results) if not isinstance(result, Exception)]
        for i, vector in zip(good, self.embed_preprocessed([results[i] for i in good]), strict=True):
            results[i] = vector
        return results


def gallery_images_with_vectors(
    sizes: list[tuple[int, int]], vectors: np.ndarray, *, model: str = "efficientnet_lite0", name: str = "copy"
) -> list[GalleryImage]:
    """Gallery images of these sizes (real JPEG files) given these vectors."""
    made = []
    for i, ((width, height), vector) in enumerate(zip(sizes, vectors, strict=True)):
        image = GalleryImageFactory(data=images.jpeg_bytes(width, height, seed=i), original_filename=f"{name}{i}.jpg")
        EmbeddingFactory(gallery_image=image, model=model, vector=vector)
        made.append(image)
    return made


def vectors_near(base: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` unit vectors about 0.99 similar to ``base`` (near-duplicates)."""
    vectors = base + 0.01 * rng.standard_normal((count, base.size))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def indexed_products(
    vectors: np.ndarray, *, model: str, sku: str = "S", categories: Sequence[str] = (), prices: Sequence[int] = ()
) -> list[Product]:
    """Products (bare rows, no image files; category "c" and price 1 unless given per row) with
    these vectors of ``model`` and the model's HNSW index built over them (dropped first: not
    grown row by row, several times slower), analysed: what the search SQL sees of a collection."""
    products = Product.objects.bulk_create(
        Product(sku=f"{sku}{i}", name=f"P{i}", category=categories[i] if categories else "c",
                price=prices[i] if prices else 1, image=f"x/{i}.png", sha256=f"{i:064d}", width=1, height=1)
        for i in range(len(vectors))
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {hnsw_index_name(model)}")
    Embedding.objects.bulk_create(
        (Embedding(product=p, model=model, vector=vectors[i], sha256=p.sha256) for i, p in enumerate(products)),
        batch_size=500,
    )
    with connection.cursor() as cursor:
        cursor.execute(hnsw_index_sql(model, vectors.shape[1]))
        cursor.execute("ANALYZE search_embedding")
        cursor.execute("ANALYZE catalog_product")
    return products
