"""The schema tells the truth: schemathesis generates requests for every operation of
/api/v1/schema/ (with a superuser's token, a fixed seed) and checks that none answers a 5xx,
that every status is one the schema lists, and that every body matches its schema. No answer
names a server path: not the code's folder, MEDIA_ROOT, PRIVATE_MEDIA_ROOT or a data root.

The requests go through the whole Django stack in this process (WSGI), against the test
database; the embedder is a stand-in (the model is not what is tested here)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
import torch
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests import images
from tests.search.helpers import FakeEmbedder, add_gallery_image, add_product
from tests.server_paths import rows_naming_server_folders, server_paths

pytestmark = pytest.mark.django_db

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
EXAMPLES = 25  # per operation; 44 operations


@pytest.fixture
def staff_token(monkeypatch, staff_user, settings, tmp_path) -> Iterator[str]:
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections
    from rest_framework.authtoken.models import Token

    monkeypatch.setattr("search.embedders.get_embedder", lambda spec: FakeEmbedder())
    settings.JOB_EVENTS_TIMEOUT = 1  # streams of jobs that never end (no worker here)
    settings.API_THROTTLE_RATES = {}  # a fuzzer is one client sending thousands of requests
    add_product(images.jpeg_bytes(96, 96, seed=1), "SKU-1", category="shoes")
    add_gallery_image(images.png_bytes(seed=2), "g.png")
    rows_naming_server_folders(settings, tmp_path)
    token = Token.objects.create(user=staff_user).key
    # The embedder flushes denormal floats to zero for speed (process-wide, once it has loaded);
    # Hypothesis must be able to generate them. Flushing again afterwards does no harm.
    torch.set_flush_denormal(False)
    # As Django's test client does: the requests run inside the test's transaction, whose
    # connection must outlive each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield token
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
    torch.set_flush_denormal(True)


def _application():
    from simsite.wsgi import application

    return application


schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", _application())


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_every_operation_keeps_to_its_schema(case, staff_token):
    from django.conf import settings as django_settings

    response = case.call_and_validate(headers={"Authorization": f"Token {staff_token}"}, checks=CHECKS)
    body = response.content.decode("utf-8", "replace") if "json" in response.headers.get("Content-Type", "") else ""
    leaked = [path for path in server_paths(django_settings) if path in body]
    assert not leaked, (case.method, case.path, leaked, body[:300])
