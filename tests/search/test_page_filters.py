"""The pages' price filters refuse what no price can be, with a 400 and a message (they
reached the database as a 500 before)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("value", ["1e200000", "NaN", "Infinity", "-1", "12.345", "abc"])
def test_bad_price_filters_are_refused(client, value):
    catalog = client.get("/catalog/", {"min_price": value})
    assert catalog.status_code == 400 and b"min_price must be a number" in catalog.content
    search = client.post("/search", {"max_price": value})
    assert search.status_code == 400 and b"max_price must be a number" in search.content


def test_good_price_filters_pass(client):
    assert client.get("/catalog/", {"min_price": "10", "max_price": "19.99"}).status_code == 200
