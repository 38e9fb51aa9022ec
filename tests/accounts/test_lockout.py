"""Password guessing: the login page, the admin's and the token endpoint lock an account from
an address after LOGIN_FAILURE_LIMIT failures, say so clearly, log and audit it, and an
administrator can unlock it."""

from __future__ import annotations

import logging

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import AuditEntry

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def limits(settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.API_THROTTLE_RATES = {}  # the lockout is what is tested, not the rate limit


@pytest.fixture
def officer(role_user):
    return role_user("officer", "signature_officer", is_staff=True)  # staff: the admin lets it in


def _admin_login(client: Client, password: str, address: str = "198.51.100.7"):
    return client.post("/admin/login/", {"username": "officer", "password": password}, REMOTE_ADDR=address)


def test_the_login_page_locks_out_after_repeated_failures(officer, caplog):
    client = Client()
    for _ in range(2):
        response = client.post("/accounts/login/", {"username": "officer", "password": "wrong"})
        assert response.status_code == 200 and "correct username and password" in response.content.decode()
    with caplog.at_level(logging.WARNING, logger="simsite.security"):
        locked = client.post("/accounts/login/", {"username": "officer", "password": "wrong"})
    assert locked.status_code == 403 and "Too many failed logins" in locked.content.decode()
    assert "login locked out: account 'officer'" in caplog.text
    # The right password no longer logs in while locked.
    again = client.post("/accounts/login/", {"username": "officer", "password": "s3cret-pass"})
    assert again.status_code == 403 and "_auth_user_id" not in client.session
    entries = AuditEntry.objects.filter(action="login_locked_out")
    assert [(e.target, e.address) for e in entries] == [("account officer", "127.0.0.1")]  # once per lockout


def test_the_admin_login_locks_out_and_an_admin_can_unlock(officer):
    client = Client()
    for _ in range(2):
        assert _admin_login(client, "wrong").status_code == 200
    assert _admin_login(client, "wrong").status_code == 403
    assert _admin_login(client, "s3cret-pass").status_code == 403
    # Another address is not locked out of the same account.
    assert _admin_login(Client(), "s3cret-pass", address="203.0.113.5").status_code == 302
    call_command("axes_reset_username", "officer")
    assert _admin_login(client, "s3cret-pass").status_code == 302


def test_the_token_endpoint_locks_out_with_a_clear_error(officer):
    client = APIClient()
    for _ in range(2):
        response = client.post("/api/v1/auth/token/", {"username": "officer", "password": "wrong"}, format="json")
        assert response.status_code == 400
    third = client.post("/api/v1/auth/token/", {"username": "officer", "password": "wrong"}, format="json")
    assert third.status_code == 403  # the failure that reaches the limit locks at once
    locked = client.post("/api/v1/auth/token/", {"username": "officer", "password": "s3cret-pass"}, format="json")
    assert locked.status_code == 403
    error = locked.json()["error"]
    assert error["code"] == "locked_out" and "administrator" in error["message"]
    other = APIClient().post("/api/v1/auth/token/", {"username": "officer", "password": "s3cret-pass"},
                             format="json", REMOTE_ADDR="203.0.113.5")  # fmt: skip
    assert other.status_code == 200 and other.json()["token"]


def test_a_success_forgets_the_failures(officer):
    client = Client()
    for _ in range(2):
        client.post("/accounts/login/", {"username": "officer", "password": "wrong"})
    assert client.post("/accounts/login/", {"username": "officer", "password": "s3cret-pass"}).status_code == 302
    client.logout()
    for _ in range(2):
        client.post("/accounts/login/", {"username": "officer", "password": "wrong"})
    assert client.post("/accounts/login/", {"username": "officer", "password": "s3cret-pass"}).status_code == 302
