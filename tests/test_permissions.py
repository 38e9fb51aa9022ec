"""Who may do what, over every operation of the API schema: reads are public, writes are
staff-only (401 anonymous, 403 authenticated non-staff), by token or by session with CSRF."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

READS = {"get"}
MISSING_ID = "999999"


def _operations() -> list[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [(method, re.sub(r"\{[^}]+\}", MISSING_ID, path)) for path, item in schema["paths"].items()
            for method in item if method in ("get", "post", "patch", "put", "delete")]  # fmt: skip


OPERATIONS = _operations()
# Writes open to everyone by design: the token endpoint (it is how one logs in), and the
# signature comparison and search, which store nothing.
PUBLIC_WRITES = {("post", "/api/v1/auth/token/"), ("post", "/api/v1/signatures/compare/"),
                 ("post", "/api/v1/search/"), ("post", "/api/v1/search/batch/")}  # fmt: skip


def _call(client, method: str, path: str):
    if method == "get":
        return client.get(path, {"page_size": 1} if not path.endswith("/events/") else {})
    return getattr(client, method)(path, {}, format="json") if isinstance(client, APIClient) else \
        getattr(client, method)(path, "{}", content_type="application/json")  # fmt: skip


@pytest.fixture
def clients(django_user_model, settings):
    settings.JOB_EVENTS_TIMEOUT = 1
    settings.API_THROTTLE_RATES = {}
    staff = django_user_model.objects.create_user("staff", password="pw-staff-1", is_staff=True)
    django_user_model.objects.create_user("user", password="pw-user-1")
    anonymous = APIClient()
    user = APIClient()
    user.login(username="user", password="pw-user-1")
    token = APIClient()
    token.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    session = Client(enforce_csrf_checks=True)
    session.login(username="staff", password="pw-staff-1")
    return {"anonymous": anonymous, "user": user, "token": token, "session": session}


def test_the_matrix_covers_every_operation():
    assert len(OPERATIONS) >= 44


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m.upper()} {p}" for m, p in OPERATIONS])
def test_reads_are_public_and_writes_are_staff_only(clients, method, path):
    anonymous = _call(clients["anonymous"], method, path)
    user = _call(clients["user"], method, path)
    staff = _call(clients["token"], method, path)
    assert staff.status_code not in (401, 403), (staff.status_code, staff.content[:200])
    if method in READS or (method, path) in PUBLIC_WRITES:
        assert anonymous.status_code not in (401, 403) and user.status_code not in (401, 403)
        return
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "not_authenticated"
    assert "WWW-Authenticate" in anonymous
    assert user.status_code == 403 and user.json()["error"]["code"] == "permission_denied"
    # A staff session must send its CSRF token: without it, refused before anything runs.
    session = _call(clients["session"], method, path)
    assert session.status_code == 403 and "CSRF" in session.json()["error"]["message"]
