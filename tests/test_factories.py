"""The factories make rows as the application does: stored files, current vectors, roles."""

from __future__ import annotations

import pytest
from django.core.files.storage import default_storage

from search.models import IndexBatch
from tests.factories import (
    PASSWORD,
    EmbeddingFactory,
    GalleryImageFactory,
    IndexJobFactory,
    ProductFactory,
    ProductImportFactory,
    TrainedModelFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def test_items_are_stored_through_the_intake_and_not_queued_unless_asked():
    product, image = ProductFactory(category="shoes"), GalleryImageFactory()
    assert default_storage.exists(product.image.name) and default_storage.exists(image.file.name)
    assert product.sha256 != image.sha256 and product.category == "shoes" and product.width > 0
    assert not IndexBatch.objects.exists()
    ProductFactory(notify=True)
    assert IndexBatch.objects.exists()


def test_an_embedding_is_current_for_its_item():
    vector = EmbeddingFactory()
    assert vector.product is not None and vector.sha256 == vector.product.sha256 and len(vector.vector) == 1280
    image = GalleryImageFactory()
    on_image = EmbeddingFactory(gallery_image=image, model="other", dim=4)  # a model of 4 dimensions
    assert on_image.product is None and on_image.sha256 == image.sha256 and len(on_image.vector) == 4


def test_jobs_and_users():
    assert IndexJobFactory().state == "queued" and ProductImportFactory().state == "queued"
    assert TrainedModelFactory().status == "queued"
    editor = UserFactory(roles=["catalog_editor"])
    assert editor.check_password(PASSWORD) and editor.has_perm("catalog.add_product")
    assert not UserFactory().has_perm("catalog.view_product")
    with pytest.raises(AssertionError):
        UserFactory(roles=["no_such_role"])
