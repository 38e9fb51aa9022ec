"""A vector carries its product's category and price (search/migrations/0010), whatever writes
the product or the vector, so that filtered searches never look up the product."""

from __future__ import annotations

import threading
from decimal import Decimal

import numpy as np
import pytest
from django.db import connection, connections, transaction

from catalog.models import Product
from catalog.services import product_update
from search.models import DEFAULT_MODEL_DIM, DEFAULT_MODEL_KEY, Embedding
from search.selectors.embedding_models import active_model_key
from search.selectors.neighbours import items_similar_to
from search.services.indexing import embedding_upsert
from tests import images
from tests.factories import EmbeddingFactory
from tests.search.helpers import add_gallery_image, add_product, index_now


def copied(product: Product) -> set[tuple[str | None, Decimal | None]]:
    return set(Embedding.objects.filter(product=product).values_list("category", "price"))


@pytest.mark.django_db
def test_vectors_take_their_products_category_and_price(fake_embedder):
    shoe = add_product(images.png_bytes(seed=1), "SHOE", category="shoes", price="12.50")
    photo = add_gallery_image(images.png_bytes(seed=2), "photo.png")
    index_now(product_ids=[shoe.pk], gallery_ids=[photo.pk])
    assert copied(shoe) == {("shoes", Decimal("12.50"))}
    assert set(Embedding.objects.filter(gallery_image=photo).values_list("category", "price")) == {(None, None)}
    # A second model's vector of the same product, written by hand: filled in all the same.
    EmbeddingFactory(product=shoe, model="other", vector=np.ones(4), category="fake")
    assert copied(shoe) == {("shoes", Decimal("12.50"))}


@pytest.mark.django_db
def test_vectors_follow_every_change_of_their_product(fake_embedder):
    shoe = add_product(images.png_bytes(seed=1), "SHOE", category="shoes", price="12.50")
    bag = add_product(images.png_bytes(seed=3), "BAG", category="bags", price="40.00")
    index_now(product_ids=[shoe.pk, bag.pk])
    vector = np.asarray(Embedding.objects.get(product=shoe).vector, dtype=np.float32)
    model = active_model_key()

    product_update(product=shoe, category="boots", notify=False)  # the service
    assert copied(shoe) == {("boots", Decimal("12.50"))}
    assert [m.ref.id for m in items_similar_to(vector=vector, model=model, categories=["boots"])] == [shoe.pk]
    assert items_similar_to(vector=vector, model=model, categories=["shoes"]) == []

    Product.objects.filter(pk=shoe.pk).update(price=Decimal("99.00"))  # a bulk update (admin actions, imports)
    assert copied(shoe) == {("boots", Decimal("99.00"))}
    assert items_similar_to(vector=vector, model=model, max_price=Decimal("50")) != []
    assert shoe.pk not in {m.ref.id for m in items_similar_to(vector=vector, model=model, max_price=Decimal("50"))}
    assert copied(bag) == {("bags", Decimal("40.00"))}  # other products untouched

    # Written directly, the copy is put back to the product's values.
    Embedding.objects.filter(product=shoe).update(category="bags", price=0)
    assert copied(shoe) == {("boots", Decimal("99.00"))}
    # A new vector of the product over the old one (the upsert): still the product's values.
    embedding_upsert(rows=[Embedding(product=shoe, model=model, vector=vector, sha256=shoe.sha256)])
    assert copied(shoe) == {("boots", Decimal("99.00"))}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("first", ["vector", "product"])
def test_a_change_racing_a_vector_write_is_never_lost(first):
    """The vector's writer locks the product row: a category change made meanwhile waits for
    it (and then updates the committed vector), or the writer waits for the change (and then
    copies the new category). Either way the vector ends with the product's category."""
    shoe = add_product(images.png_bytes(seed=1), "SHOE", category="shoes", price="12.50")
    vector = np.ones(DEFAULT_MODEL_DIM, dtype=np.float32)
    row = Embedding(product=shoe, model=DEFAULT_MODEL_KEY, vector=vector, sha256=shoe.sha256)
    holding, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def write_vector() -> None:
        try:
            with transaction.atomic():
                embedding_upsert(rows=[row])
                holding.set()
                done.wait(1.0)  # the other transaction starts meanwhile and has to wait
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)
        finally:
            holding.set()
            connections.close_all()

    def change_product() -> None:
        try:
            with transaction.atomic():
                Product.objects.filter(pk=shoe.pk).update(category="boots")
                holding.set()
                done.wait(1.0)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
        finally:
            holding.set()
            connections.close_all()

    threads = {"vector": write_vector, "product": change_product}
    leader = threading.Thread(target=threads[first])
    leader.start()
    assert holding.wait(10)
    follower = threading.Thread(target=threads["product" if first == "vector" else "vector"])
    follower.start()
    follower.join(0.3)
    assert follower.is_alive()  # blocked on the product row's lock
    done.set()
    leader.join(10)
    follower.join(10)
    assert not errors
    connection.close()
    assert copied(shoe) == {("boots", Decimal("12.50"))}


@pytest.mark.django_db(transaction=True)
def test_the_migration_copies_category_and_price_onto_existing_vectors():
    """Vectors written before migration 0010 get their products' values when it runs; going
    back removes the copy and its triggers."""
    from django.db.migrations.executor import MigrationExecutor

    before = ("search", "0009_hnsw_ef_construction")
    shoe = add_product(images.png_bytes(seed=1), "SHOE", category="shoes", price="12.50")
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO search_embedding (product_id, model, vector, sha256, created_at) "
                "VALUES (%s, 'other', '[1,0,0]', %s, now())",
                [shoe.pk, shoe.sha256],
            )
            cursor.execute("UPDATE catalog_product SET category = 'boots' WHERE id = %s", [shoe.pk])
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())  # 0010, then every later migration
    assert copied(shoe) == {("boots", Decimal("12.50"))}
    product_update(product=Product.objects.get(pk=shoe.pk), price=Decimal("3.00"), notify=False)
    assert copied(shoe) == {("boots", Decimal("3.00"))}  # and the triggers are back
