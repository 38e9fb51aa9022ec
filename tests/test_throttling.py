"""Per-client rate limits by scope: 429 with Retry-After and the JSON error body."""

from __future__ import annotations

import logging
import threading

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import RequestFactory

from simsite.env import env_rate
from tests import images

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake_embedder(monkeypatch):
    from tests.search.helpers import FakeEmbedder

    embedder = FakeEmbedder()
    monkeypatch.setattr("search.embedders.get_embedder", lambda spec: embedder)
    return embedder


def test_token_requests_are_limited_per_client(api_client, settings):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "token": "2/min"}
    for _ in range(2):
        response = api_client.post("/api/v1/auth/token/", {"username": "x", "password": "guess"}, format="json")
        assert response.status_code == 400
    response = api_client.post("/api/v1/auth/token/", {"username": "x", "password": "guess"}, format="json")
    assert response.status_code == 429
    assert 58 <= int(response["Retry-After"]) <= 60  # until the first of the two leaves the minute
    assert response.json()["error"]["code"] == "throttled"
    other = api_client.post("/api/v1/auth/token/", {"username": "x", "password": "guess"}, format="json",
                            REMOTE_ADDR="203.0.113.9")  # fmt: skip
    assert other.status_code == 400  # another client has its own budget


def test_searches_are_limited_but_reads_and_other_scopes_are_not(api_client, staff_client, settings, fake_embedder):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "search": "1/min", "upload": "1/hour"}

    def search(client):
        image = SimpleUploadedFile("q.png", images.png_bytes(seed=1), "image/png")
        return client.post("/api/v1/search/", {"image": image})

    assert search(api_client).status_code == 200
    assert search(api_client).status_code == 429
    assert search(staff_client).status_code == 200  # a user is counted apart from an address
    assert api_client.get("/api/v1/gallery/").status_code == 200  # listing is not an upload
    upload = SimpleUploadedFile("a.png", images.png_bytes(seed=2), "image/png")
    assert staff_client.post("/api/v1/gallery/", {"files": [upload]}).status_code == 201
    assert staff_client.get("/api/v1/gallery/").status_code == 200
    upload = SimpleUploadedFile("b.png", images.png_bytes(seed=3), "image/png")
    assert staff_client.post("/api/v1/gallery/", {"files": [upload]}).status_code == 429


def test_racing_requests_are_counted_exactly(settings):
    """Requests from several processes at once: each is counted by one atomic script, so no
    two read the same count and pass together (DRF's read-then-write lets them)."""
    from simsite.drf import ScopedThrottle

    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "search": "5/min"}
    view = type("View", (), {"throttle_scope": "search"})()
    start, answers = threading.Barrier(12), []

    def one() -> None:
        request = RequestFactory().post("/api/v1/search/", REMOTE_ADDR="198.51.100.7")
        request.user = None
        start.wait()
        answers.append(ScopedThrottle().allow_request(request, view))

    threads = [threading.Thread(target=one) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [False] * 7 + [True] * 5


def test_requests_pass_while_redis_is_unreachable(api_client, settings, caplog):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "token": "1/min"}
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}
    with caplog.at_level(logging.WARNING, logger="simsite.drf"):
        for _ in range(3):
            response = api_client.post("/api/v1/auth/token/", {"username": "x", "password": "y"}, format="json")
            assert response.status_code == 400
    assert "rate limit 'token' not checked: Redis failed (ConnectionError)" in caplog.text


def test_a_scope_can_be_switched_off(api_client, settings):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "token": None}
    settings.AXES_FAILURE_LIMIT = 100  # the login lockout is a separate guard (tests/accounts/test_lockout.py)
    for _ in range(15):
        assert (
            api_client.post("/api/v1/auth/token/", {"username": "x", "password": "y"}, format="json").status_code == 400
        )


def test_rates_are_checked_at_start(monkeypatch):
    monkeypatch.setenv("THROTTLE_SEARCH", "lots")
    with pytest.raises(ImproperlyConfigured, match="THROTTLE_SEARCH"):
        env_rate("THROTTLE_SEARCH", "120/min")
    monkeypatch.setenv("THROTTLE_SEARCH", "off")
    assert env_rate("THROTTLE_SEARCH", "120/min") is None
    monkeypatch.setenv("THROTTLE_SEARCH", "5/s")
    assert env_rate("THROTTLE_SEARCH", "120/min") == "5/s"
