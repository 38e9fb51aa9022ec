"""The nearest-neighbour SQL: which plan each case uses, and that HNSW agrees with exact."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection
from django.forms.models import model_to_dict
from django.test.utils import CaptureQueriesContext

from catalog.models import GalleryImage, Product
from search.items import ItemRef
from search.models import Embedding, hnsw_index_sql
from search.selectors.embeddings import items_by_ref
from search.selectors.neighbours import items_similar_plan, items_similar_to

pytestmark = pytest.mark.django_db

MODEL, DIM = "resnet18", 512
CATEGORIES = ["shoes", "bags", "hats", "belts", "socks", "ties", "scarves", "gloves", "caps", "rare"]


@pytest.fixture(scope="module")
def vectors(django_db_setup, django_db_blocker):
    """3,000 products (10 categories, 'rare' holding 2%) and 1,000 gallery images, clustered
    vectors; built once for the module (committed, removed at the end)."""
    with django_db_blocker.unblock():
        data = _build()
        yield data
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS embedding_{MODEL}_hnsw")
        Embedding.objects.filter(model=MODEL).delete()
        Product.objects.all().delete()
        GalleryImage.objects.all().delete()


def _build() -> dict:
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((40, DIM))
    data = centres[rng.integers(0, 40, 4000)] + 0.6 * rng.standard_normal((4000, DIM))
    data = (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)
    category = ["rare" if i % 50 == 0 else CATEGORIES[i % 9] for i in range(3000)]
    products = Product.objects.bulk_create(
        Product(sku=f"S{i}", name=f"P{i}", category=category[i], price=i % 100, image=f"x/{i}.png",
                sha256=f"{i:064d}", width=1, height=1)
        for i in range(3000)
    )  # fmt: skip
    gallery = GalleryImage.objects.bulk_create(
        GalleryImage(file=f"g/{i}.png", original_filename=f"{i}.png", sha256=f"{i:064x}", width=1, height=1)
        for i in range(1000)
    )
    Embedding.objects.bulk_create(
        [Embedding(product=p, model=MODEL, vector=data[i], sha256=p.sha256) for i, p in enumerate(products)]
        + [
            Embedding(gallery_image=g, model=MODEL, vector=data[3000 + i], sha256=g.sha256)
            for i, g in enumerate(gallery)
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(hnsw_index_sql(MODEL, DIM))
        cursor.execute("ANALYZE search_embedding")
        cursor.execute("ANALYZE catalog_product")
    return {"data": data, "products": products, "gallery": gallery, "category": category}


def uses_hnsw(plan: str) -> bool:
    return "embedding_resnet18_hnsw" in plan


def test_plans(vectors, settings):
    settings.SEARCH_EXACT_MAX_ROWS = 200  # scaled to this small catalog (tests/search/test_plans.py: the default)
    query = vectors["data"][5]
    assert uses_hnsw(items_similar_plan(vector=query, model=MODEL, k=10))
    # The 1,000 gallery vectors: more than 200, the graph.
    assert uses_hnsw(items_similar_plan(vector=query, model=MODEL, k=10, collection="gallery"))
    settings.SEARCH_EXACT_MAX_ROWS = 1000
    # 1,000 gallery vectors at the default bound: scanning them all exactly.
    small = items_similar_plan(vector=query, model=MODEL, k=10, collection="gallery")
    assert not uses_hnsw(small) and "Sort" in small
    settings.SEARCH_EXACT_MAX_ROWS = 200
    assert uses_hnsw(items_similar_plan(vector=query, model=MODEL, k=10, collection="products"))
    # A category of 11%: the graph, scanned iteratively until k rows pass the filter.
    assert uses_hnsw(items_similar_plan(vector=query, model=MODEL, k=10, categories=["shoes"]))
    # A category of 2%: so few rows that scanning them exactly is cheaper.
    rare = items_similar_plan(vector=query, model=MODEL, k=10, categories=["rare"])
    assert not uses_hnsw(rare) and "category" in rare
    # A broad filter (90% of products): the graph, scanned iteratively until k rows pass.
    assert uses_hnsw(items_similar_plan(vector=query, model=MODEL, k=10, max_price=89))
    exact = items_similar_plan(vector=query, model=MODEL, k=10, exact=True)
    assert not uses_hnsw(exact) and "Sort" in exact


def test_filter_counts_read_an_index_however_selective(vectors):
    """The plan choice counts the vectors a filter leaves (up to SEARCH_EXACT_MAX_ROWS + 1):
    through the (model, category) and (model, price) indexes, never a scan of every vector."""
    from search.selectors.caches import search_caches_forget

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE search_embedding")
    for filters, index in (({"categories": ["rare"]}, "embedding_model_category"),
                           ({"min_price": 7, "max_price": 7}, "embedding_model_price")):  # fmt: skip
        search_caches_forget()
        with CaptureQueriesContext(connection) as logged:
            assert items_similar_to(vector=vectors["data"][0], model=MODEL, k=5, **filters)
        count = next(entry["sql"] for entry in logged.captured_queries if entry["sql"].startswith("SELECT count(*)"))
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN " + count)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert index in plan and "Seq Scan" not in plan


def test_hnsw_agrees_with_exact_scan(vectors):
    recalls = []
    for row in range(0, 4000, 80):
        query = vectors["data"][row] + 0.05 * np.random.default_rng(row).standard_normal(DIM).astype(np.float32)
        approximate = {m.ref for m in items_similar_to(vector=query, model=MODEL, k=10)}
        exact = {m.ref for m in items_similar_to(vector=query, model=MODEL, k=10, exact=True)}
        recalls.append(len(approximate & exact) / 10)
    assert np.mean(recalls) >= 0.98


def test_filtered_queries_still_return_k(vectors):
    products = {p.pk: p for p in vectors["products"]}
    for row in range(0, 3000, 300):
        matches = items_similar_to(vector=vectors["data"][row], model=MODEL, k=20, categories=["rare"])
        assert len(matches) == 20
        assert all(products[m.ref.id].category == "rare" for m in matches)
        exact = items_similar_to(vector=vectors["data"][row], model=MODEL, k=20, categories=["rare"], exact=True)
        assert len({m.ref.id for m in matches} & {m.ref.id for m in exact}) >= 18
    for row in range(0, 3000, 500):  # broad filter: HNSW with the iterative scan
        broad = items_similar_to(vector=vectors["data"][row], model=MODEL, k=50, max_price=89, collection="products")
        assert len(broad) == 50 and all(products[m.ref.id].price <= 89 for m in broad)
        exact = items_similar_to(vector=vectors["data"][row], model=MODEL, k=50, max_price=89, exact=True)
        assert len({m.ref.id for m in broad} & {m.ref.id for m in exact}) >= 45
    priced = items_similar_to(vector=vectors["data"][0], model=MODEL, k=15, min_price=20, max_price=30)
    assert len(priced) == 15 and all(20 <= products[m.ref.id].price <= 30 for m in priced)


def test_results_are_sorted_thresholded_and_exclude_the_query(vectors):
    first = vectors["products"][0]
    matches = items_similar_to(vector=vectors["data"][0], model=MODEL, k=10, exclude=ItemRef("product", first.pk))
    assert ItemRef("product", first.pk) not in {m.ref for m in matches}
    similarities = [m.similarity for m in matches]
    assert similarities == sorted(similarities, reverse=True)
    cut = similarities[4]
    first_ref = ItemRef("product", first.pk)
    above = items_similar_to(vector=vectors["data"][0], model=MODEL, k=10, threshold=cut, exclude=first_ref)
    assert [m.similarity for m in above] == [s for s in similarities if s >= cut]
    only_gallery = items_similar_to(vector=vectors["data"][0], model=MODEL, k=5, collection="gallery")
    assert {m.ref.kind for m in only_gallery} == {"gallery_image"}
    assert items_similar_to(vector=vectors["data"][0], model=MODEL, k=5, collection="gallery", categories=["x"]) == []


def test_matches_bring_their_items_in_the_same_statement(vectors):
    """``with_items``: the items as the ORM reads them (``items_by_ref``), with the same
    ``embedded`` flag, from the one search statement; an item gone meanwhile is left out."""
    query = vectors["data"][3000] + vectors["data"][4]  # near a gallery image and a product
    plain = items_similar_to(vector=query, model=MODEL, k=12)
    assert {m.ref.kind for m in plain} == {"product", "gallery_image"}
    stale = next(m.ref.id for m in plain if m.ref.kind == "product")
    Product.objects.filter(pk=stale).update(sha256="f" * 64)  # its image changed, not embedded yet
    with CaptureQueriesContext(connection) as logged:
        matches = items_similar_to(vector=query, model=MODEL, k=12, with_items=True)
    assert sum("ORDER BY" in entry["sql"] for entry in logged.captured_queries) == 1
    assert not any("catalog_product" in entry["sql"] and "<=>" not in entry["sql"] for entry in logged.captured_queries)
    assert matches == plain
    expected = items_by_ref([m.ref for m in matches], model=MODEL)
    for match in matches:
        assert type(match.item) is type(expected[match.ref])
        assert model_to_dict(match.item) == model_to_dict(expected[match.ref])
        current = match.ref != ItemRef("product", stale)
        assert match.item.embedded is expected[match.ref].embedded is current
    # Deleted by another transaction between the search's vector and its item (the vector's
    # foreign key is checked at commit, so the row can be gone here as it can be in a race).
    gone = matches[0].ref
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {gone.item_kind.table} WHERE id = %s", [gone.id])  # noqa: S608
    again = items_similar_to(vector=query, model=MODEL, k=12, with_items=True)
    assert [m.ref for m in again] == [m.ref for m in matches[1:]]
    Embedding.objects.filter(**{gone.kind: gone.id}).delete()  # as the deleting transaction would


def test_models_never_mix(vectors):
    assert items_similar_to(vector=np.ones(1280, dtype=np.float32) / 1280**0.5, model="efficientnet_lite0", k=5) == []


def test_query_vector_travels_in_binary_with_full_precision(vectors):
    """The vector is a bound binary parameter (not 1280 numbers in the SQL text), Django's
    execute wrappers still see the statement, and the similarities are float32-exact."""
    query = vectors["data"][11]
    seen: list[tuple[str, object]] = []

    def spy(execute, sql, params, many, context):
        seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy), CaptureQueriesContext(connection) as logged:  # as DEBUG logs them
        matches = items_similar_to(vector=query, model=MODEL, k=5, exact=True)
    statement = next(sql for sql, _ in seen if "ORDER BY" in sql)
    assert "%s::vector(512)" in statement and len(statement) < 1000
    assert any("$1::vector(512)" in entry["sql"] for entry in logged.captured_queries)
    expected = np.sort(vectors["data"] @ query)[::-1][:5]
    assert np.allclose([m.similarity for m in matches], expected, atol=1e-4)
    assert matches[0].ref == ItemRef("product", vectors["products"][11].pk)


def test_search_statements_are_prepared_once_per_connection(vectors, settings):
    def prepared() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%%<=>%%'")
            return cursor.fetchone()[0]

    query = vectors["data"][3]
    before = prepared()
    settings.SEARCH_PREPARED_STATEMENTS = False
    first = items_similar_to(vector=query, model=MODEL, k=5, collection="products")
    assert prepared() == before
    settings.SEARCH_PREPARED_STATEMENTS = True
    assert items_similar_to(vector=query, model=MODEL, k=5, collection="products") == first
    assert prepared() == before + 1
    assert items_similar_to(vector=query, model=MODEL, k=5, collection="products") == first
    assert prepared() == before + 1  # the same statement, reused
    # A generic plan (PostgreSQL's choice for a statement after a few runs) still takes the
    # model's partial HNSW index: the statement names the model and k literally. With the
    # model as a parameter the generic plan could not use the partial index and sorted.
    settings.SEARCH_EXACT_MAX_ROWS = 200  # 'shoes' (11%) on the graph
    with connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_generic_plan")
    try:
        for arguments in ({}, {"categories": ["shoes"]}, {"collection": "gallery"}):
            assert len(items_similar_to(vector=query, model=MODEL, k=7, with_items=True, **arguments)) == 7
        with connection.cursor() as cursor:
            cursor.execute("SELECT name, parameter_types, generic_plans FROM pg_prepared_statements "
                           "WHERE statement LIKE '%%LIMIT 7%%' AND statement LIKE '%%e.category = ANY%%'")  # fmt: skip
            name, types, generic = cursor.fetchone()
            assert generic >= 1 and types == ["vector", "text[]"]
            literal = "[" + ",".join(f"{x:.7g}" for x in query) + "]"
            cursor.execute(f"EXPLAIN EXECUTE {name}(%s, %s)", [literal, ["shoes"]])
            assert uses_hnsw("\n".join(row[0] for row in cursor.fetchall()))
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET plan_cache_mode")
    # A new index is a schema change: PostgreSQL plans the prepared statement again.
    with connection.cursor() as cursor:
        cursor.execute("CREATE INDEX selectors_test_price ON catalog_product (price)")
    assert items_similar_to(vector=query, model=MODEL, k=5, collection="products") == first


def test_ef_search_follows_the_index_size(vectors, settings, monkeypatch):
    from search.selectors import caches, hnsw, neighbours

    settings.SEARCH_HNSW_EF_SEARCH = None  # auto
    monkeypatch.setattr(hnsw, "EF_SEARCH_BY_SIZE", ((1000, 40), (3000, 200)))
    monkeypatch.setattr(hnsw, "EF_SEARCH_LARGEST", 600)
    assert hnsw.ef_search_for(MODEL) == 600  # 4,000 vectors, counted by CREATE INDEX
    caches.search_caches_forget()
    with connection.cursor() as cursor:  # (rolled back with the test)
        cursor.execute("UPDATE pg_class SET reltuples = 2500 WHERE relname = 'embedding_resnet18_hnsw'")
    assert hnsw.ef_search_for(MODEL) == 200
    arguments = {"vector": vectors["data"][0], "model": MODEL, "collection": "all", "categories": (),
                 "min_price": None, "max_price": None, "exclude": None, "exact": False}  # fmt: skip
    assert neighbours._similar_query(k=10, **arguments)[2]["hnsw.ef_search"] == "200"
    assert neighbours._similar_query(k=150, **arguments)[2]["hnsw.ef_search"] == "300"  # never under 2k
    filtered = {**arguments, "max_price": 89}  # 90% of the products: the index
    assert neighbours._similar_query(k=10, **filtered)[2]["hnsw.ef_search"] == "400"  # doubled under filters
    settings.SEARCH_HNSW_EF_SEARCH = 64
    assert hnsw.ef_search_for(MODEL) == 64  # a number fixes it
    # Never counted (reltuples -1): the rows are counted instead.
    settings.SEARCH_HNSW_EF_SEARCH = None
    caches.search_caches_forget()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE pg_class SET reltuples = -1 WHERE relname = 'embedding_resnet18_hnsw'")
    assert hnsw._index_size(MODEL) == 4000
