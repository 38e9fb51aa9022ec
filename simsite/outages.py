"""A database that stops answering (restarting, failing over) is an outage, not a bug: 503 with
Retry-After, so that clients and load balancers wait and try again, instead of a 500."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

from simsite.drf import error_body

logger = logging.getLogger(__name__)

# Seconds a client is asked to wait: a restart of PostgreSQL takes one or two.
RETRY_AFTER_SECONDS = 5
MESSAGE = "The database is not answering for the moment (restarting or failing over); try again shortly."


class DatabaseOutageMiddleware:
    """Turns a view's lost or refused database connection into 503 ``database_unavailable``
    (JSON under /api/, a short page elsewhere). Django drops the broken connection at the end of
    the request, and the next request connects afresh."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        logger.warning("database unavailable during %s %s: %s", request.method, request.path, exception)
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse(error_body("database_unavailable", MESSAGE), status=503)
        else:
            response = HttpResponse(MESSAGE, content_type="text/plain; charset=utf-8", status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
