"""Rows a test needs, made the way the application makes them (factory_boy).

Products and gallery images go through the catalog's own intake and storage (a real image
file, named by its sha256), not queued for embedding unless ``notify=True``; the rest are plain
rows with the defaults a test rarely cares about. Override any field by keyword:
``ProductFactory(sku="SH-1", category="shoes", data=images.png_bytes(seed=3))``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import factory
import numpy as np
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from catalog.images import image_validate
from catalog.models import GalleryImage, Product, ProductImport
from catalog.services import gallery_image_create, product_create
from search.models import Embedding, IndexJob, TrainedModel
from tests import images

DEFAULT_MODEL = "efficientnet_lite0"
PASSWORD = "s3cret-pass"


_pictures = itertools.count()


def _new_picture() -> bytes:
    """A JPEG no other factory-made item has (one counter for every kind: no shared sha256)."""
    return images.jpeg_bytes(seed=next(_pictures))


def unit_vector(dim: int, seed: int) -> np.ndarray:
    """A pseudo-random unit vector, the same for the same seed."""
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


class ProductFactory(factory.django.DjangoModelFactory):
    """A product through ``catalog.services.product_create``; ``data``: its image's bytes."""

    class Meta:
        model = Product

    sku = factory.Sequence(lambda n: f"SKU-{n}")
    name = factory.LazyAttribute(lambda product: product.sku)
    category = "misc"
    price = "10.00"
    data = factory.LazyFunction(_new_picture)
    notify = False

    @classmethod
    def _create(cls, model_class: type[Product], *, data: bytes, **fields: Any) -> Product:
        return product_create(**fields, image=image_validate(data=data, filename=f"{fields['sku']}.jpg"))


class GalleryImageFactory(factory.django.DjangoModelFactory):
    """A gallery image through ``catalog.services.gallery_image_create``; ``data``: its bytes."""

    class Meta:
        model = GalleryImage

    original_filename = factory.Sequence(lambda n: f"image{n}.jpg")
    data = factory.LazyFunction(_new_picture)
    notify = False

    @classmethod
    def _create(cls, model_class: type[GalleryImage], *, data: bytes, original_filename: str, notify: bool) -> Any:
        image = image_validate(data=data, filename=original_filename)
        return gallery_image_create(image=image, original_filename=original_filename, notify=notify)


class EmbeddingFactory(factory.django.DjangoModelFactory):
    """A current vector of ``model`` for an item (a new product unless ``gallery_image`` is given)."""

    class Meta:
        model = Embedding

    class Params:
        dim = 1280

    product = factory.Maybe("gallery_image", yes_declaration=None, no_declaration=factory.SubFactory(ProductFactory))
    gallery_image = None
    model = DEFAULT_MODEL
    vector = factory.LazyAttributeSequence(lambda embedding, n: unit_vector(embedding.dim, seed=n))
    sha256 = factory.LazyAttribute(lambda embedding: (embedding.product or embedding.gallery_image).sha256)


class IndexJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = IndexJob

    collection = "all"
    model = DEFAULT_MODEL


class ProductImportFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProductImport

    filename = factory.Sequence(lambda n: f"import{n}.csv")
    file = factory.LazyAttribute(lambda job: f"imports/{job.filename}")


class TrainedModelFactory(factory.django.DjangoModelFactory):
    """A training run of the catalog (``status`` "queued"; pass "succeeded" with ``dim`` and
    ``weights`` for a usable model)."""

    class Meta:
        model = TrainedModel

    key = factory.Sequence(lambda n: f"trained_{n}")
    base = DEFAULT_MODEL
    source = "catalog"


class UserFactory(factory.django.DjangoModelFactory):
    """A user with password ``PASSWORD``, in the groups of ``roles`` (accounts/roles.py; the
    groups come from the migration)."""

    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password(PASSWORD)

    @factory.post_generation
    def roles(user: Any, create: bool, extracted: Sequence[str] | None, **kwargs: Any) -> None:
        if create and extracted:
            groups = list(Group.objects.filter(name__in=extracted))
            assert len(groups) == len(set(extracted)), f"unknown roles among {extracted}"
            user.groups.add(*groups)
