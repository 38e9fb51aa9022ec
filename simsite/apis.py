"""Operational endpoints: health and API tokens."""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db import DatabaseError
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import ANYONE, AccessPolicy
from search.selectors.embedding_models import active_model_key
from search.selectors.hnsw import pgvector_version
from simsite.celery import app as celery_app
from simsite.drf import ScopedThrottle

# Workers that answered a ping, per broker URL: (when, how many). A ping is broadcast to every
# worker and waits out its whole timeout; load balancers poll health every few seconds from
# every process, so one ping per HEALTH_CACHE_SECONDS and process answers them all.
_workers_seen: dict[str, tuple[float, int]] = {}
_workers_lock = threading.Lock()


def _broker_status() -> tuple[str, int]:
    """Whether the broker answers (asked every time: one connection, and an outage shows at
    once), and how many workers answer a ping through it (``_workers``)."""
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception:  # noqa: BLE001 - any failure to reach the broker means "down"
        return "down", 0
    return "ok", _workers()


def _workers() -> int:
    """Workers that answered a ping, at most HEALTH_CACHE_SECONDS ago (per process; concurrent
    requests wait for the one ping under way rather than sending their own)."""
    broker = str(celery_app.conf.broker_url)
    with _workers_lock:
        seen = _workers_seen.get(broker)
        if seen is not None and time.monotonic() - seen[0] < settings.HEALTH_CACHE_SECONDS:
            return seen[1]
        try:
            count = len(celery_app.control.ping(timeout=0.5) or [])
        except Exception:  # noqa: BLE001 - no answer is zero workers
            count = 0
        _workers_seen[broker] = (time.monotonic(), count)
        return count


class HealthApi(APIView):
    error_statuses = {503: "The database is down, or lacks the pgvector extension (the body says which)."}
    authentication_classes: list = []
    access = {"GET": ANYONE}

    @extend_schema(
        responses=inline_serializer(
            "Health",
            {
                "database": serializers.CharField(),
                "pgvector": serializers.CharField(allow_null=True),
                "broker": serializers.CharField(),
                "workers": serializers.IntegerField(),
                "model": serializers.CharField(),
            },
        )
    )
    def get(self, request: Request) -> Response:
        body: dict[str, object] = {"database": "ok", "pgvector": None}
        status_code = 200
        try:
            body["pgvector"] = pgvector_version()
            if body["pgvector"] is None:
                body["database"], status_code = "pgvector extension missing", 503
        except DatabaseError:
            body["database"], status_code = "down", 503
        body["broker"], body["workers"] = _broker_status()
        body["model"] = active_model_key() if status_code == 200 else settings.EMBEDDING_DEFAULT_MODEL
        return Response(body, status=status_code)


class TokenApi(ObtainAuthToken):
    """POST username/password, get the API token for `Authorization: Token <key>`. Repeated
    failures lock the account from that address for a while (403 ``locked_out``)."""

    permission_classes = [AccessPolicy]
    access = {"POST": ANYONE}
    throttle_classes = [ScopedThrottle]  # ObtainAuthToken has none: a password-guessing target
    throttle_scope = "token"
    error_statuses = {403: "This account is locked from this address after repeated failed logins (locked_out)."}

    def post(self, request: Request, *args: object, **kwargs: object) -> Response:
        try:
            return super().post(request, *args, **kwargs)
        except exceptions.ValidationError:
            # The lockout backend refused without checking the password (accounts.backends).
            if getattr(request, "axes_locked_out", False):
                minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
                raise exceptions.PermissionDenied(
                    f"Too many failed logins for this account from your address: it is locked for up to {minutes} "
                    "minutes. Try again later or ask an administrator to unlock it.",
                    code="locked_out",
                ) from None
            raise
