"""The search's plan is the index where the index is faster and an exact scan where that is
(few rows: a small collection or a selective filter), for every k the API allows, every
ef_search and filter selectivity: no planner cliff."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection

from catalog.models import Product
from search.models import DEFAULT_MODEL_DIM, DEFAULT_MODEL_KEY, Embedding, hnsw_index_name
from search.selectors.neighbours import items_similar_plan, items_similar_to
from tests.search.helpers import indexed_products

pytestmark = pytest.mark.django_db

COUNT = 3000
INDEX = hnsw_index_name(DEFAULT_MODEL_KEY)


@pytest.fixture(scope="module")
def _vectors(django_db_setup, django_db_blocker):
    """3,000 products: 'big' 2,500 of them, 'mid' 440, 'small' 60 (prices 0-2999); built once
    for the module (committed, removed at the end)."""
    with django_db_blocker.unblock():
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((COUNT, DEFAULT_MODEL_DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        categories = ["small" if i < 60 else "mid" if i < 500 else "big" for i in range(COUNT)]
        products = indexed_products(vectors, model=DEFAULT_MODEL_KEY, categories=categories, prices=range(COUNT))
        yield vectors
        Embedding.objects.filter(product__in=products).delete()
        Product.objects.filter(pk__in=[p.pk for p in products]).delete()


@pytest.fixture
def catalog(_vectors, settings):
    settings.SEARCH_EXACT_MAX_ROWS = 500
    return _vectors


CASES = {
    "everything": ({}, True),
    "a big category (83%)": ({"categories": ["big"]}, True),
    "a small category (2%)": ({"categories": ["small"]}, False),
    "a price range of 100": ({"min_price": 1000, "max_price": 1099}, False),
}


@pytest.mark.parametrize("ef_search", [40, 160, 320, 1000])
def test_the_index_where_it_is_faster_an_exact_scan_where_few_rows_remain(catalog, settings, ef_search):
    settings.SEARCH_HNSW_EF_SEARCH = ef_search
    for k in (1, 10, 100):
        for name, (filters, indexed) in CASES.items():
            plan = items_similar_plan(vector=catalog[7], model=DEFAULT_MODEL_KEY, k=k, **filters)
            assert (INDEX in plan) == indexed, f"k={k}, {name}, ef_search={ef_search}:\n{plan}"
            assert "Seq Scan on search_embedding" not in plan or not indexed


def test_exact_plans_return_the_exact_neighbours_and_k_rows(catalog):
    query = catalog[30]
    found = items_similar_to(vector=query, model=DEFAULT_MODEL_KEY, k=100, categories=["small"])
    assert len(found) == 60  # every product of the category, no fewer
    similarities = catalog[:60] @ query
    assert [m.ref.id for m in found][:10] == [
        Product.objects.get(sku=f"S{i}").pk for i in np.argsort(-similarities)[:10]
    ]
    indexed = items_similar_to(vector=query, model=DEFAULT_MODEL_KEY, k=100, categories=["big"])
    assert len(indexed) == 100


def test_without_the_plan_settings_postgresql_would_fall_off_the_cliff(catalog):
    """The guard is needed: left to itself, the planner scans and sorts at a high ef_search."""
    literal = "[" + ",".join(f"{x:.7g}" for x in catalog[7]) + "]"
    sql = (f"EXPLAIN SELECT product_id FROM search_embedding WHERE model = %s "
           f"ORDER BY vector::halfvec({DEFAULT_MODEL_DIM}) <=> %s::halfvec({DEFAULT_MODEL_DIM}) LIMIT 10")  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.ef_search = 1000")
        cursor.execute(sql, [DEFAULT_MODEL_KEY, literal])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert INDEX not in plan, plan
