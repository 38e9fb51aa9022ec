from __future__ import annotations

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def test_health_reports_database_pgvector_and_broker(api_client):
    response = api_client.get("/api/v1/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["database"] == "ok"
    assert body["pgvector"].startswith("0.8")
    assert body["broker"] == "ok"
    assert body["model"] == "efficientnet_lite0"
    assert isinstance(body["workers"], int)


def test_health_is_503_when_the_database_is_down(api_client, monkeypatch):
    from django.db import DatabaseError

    def broken_cursor(*args, **kwargs):
        raise DatabaseError("connection refused")

    monkeypatch.setattr(connection, "cursor", broken_cursor)
    response = api_client.get("/api/v1/health/")
    assert response.status_code == 503
    assert response.json()["database"] == "down"


def test_health_reports_a_broker_that_is_down(api_client, settings):
    from simsite.celery import app

    original = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        body = api_client.get("/api/v1/health/").json()
    finally:
        app.conf.broker_url = original
    assert body["broker"] == "down" and body["workers"] == 0


def test_two_health_checks_within_the_cache_period_ping_the_workers_once(api_client, settings, monkeypatch):
    from simsite.celery import app

    settings.HEALTH_CACHE_SECONDS = 5
    pings = []
    ping = app.control.ping

    def counted_ping(**options):  # the real broadcast, counted
        pings.append(options)
        return ping(**options)

    monkeypatch.setattr(app.control, "ping", counted_ping)
    first = api_client.get("/api/v1/health/").json()
    second = api_client.get("/api/v1/health/").json()
    assert len(pings) == 1
    assert first["broker"] == second["broker"] == "ok" and first["workers"] == second["workers"]
    settings.HEALTH_CACHE_SECONDS = 0  # past the period: asked again
    api_client.get("/api/v1/health/")
    assert len(pings) == 2
