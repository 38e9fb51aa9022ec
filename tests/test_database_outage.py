"""A database that stops answering under a request: 503 with Retry-After, not a 500."""

from __future__ import annotations

import pytest
from django.db import OperationalError

pytestmark = pytest.mark.django_db


@pytest.fixture
def database_gone(monkeypatch):
    """The gallery's list query fails as it does while PostgreSQL restarts."""

    def refuse(*args, **kwargs):
        raise OperationalError("terminating connection due to administrator command")

    monkeypatch.setattr("search.apis.catalog.gallery_image_list", refuse)


def test_an_api_request_gets_503_database_unavailable_with_retry_after(api_client, database_gone):
    response = api_client.get("/api/v1/gallery/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "database_unavailable"


def test_other_errors_are_not_taken_for_an_outage(api_client, monkeypatch):
    monkeypatch.setattr("search.apis.catalog.gallery_image_list", lambda: 1 / 0)
    api_client.raise_request_exception = False
    assert api_client.get("/api/v1/gallery/").status_code == 500


def test_the_schema_documents_the_503_on_every_operation(api_client):
    schema = api_client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    operations = [op for path in schema["paths"].values() for method, op in path.items() if method != "parameters"]
    assert operations and all("503" in op["responses"] for op in operations)
    search = schema["paths"]["/api/v1/search/"]["post"]["responses"]["503"]["description"]
    assert "weights" in search and "database_unavailable" in search  # its own reason and the database's
