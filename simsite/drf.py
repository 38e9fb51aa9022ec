"""DRF plumbing shared by every app: error body, rate limits, pagination (permissions: accounts.access)."""

from __future__ import annotations

import copy
import functools
import logging
import secrets
from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpResponse, JsonResponse
from django.views import defaults
from django_redis import get_redis_connection
from redis.exceptions import RedisError
from rest_framework import exceptions, negotiation, pagination, serializers, throttling
from rest_framework.response import Response

from simsite.errors import ServiceError
from simsite.uploads import too_large

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def _first_validation_error(detail: Any, prefix: str | None = None) -> tuple[str | None, Any]:
    """Walk DRF's nested error detail down to the first leaf, keeping the field path."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = None if key in ("non_field_errors", "detail") else str(key)
            path = ".".join(p for p in (prefix, name) if p) or None
            return _first_validation_error(value, path)
    if isinstance(detail, list) and detail:
        return _first_validation_error(detail[0], prefix)
    return prefix, detail


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    # Imported here: rest_framework.views reads DRF settings, which name this module.
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, RequestDataTooBig):  # a body over a limit, found while parsing it
        exc = too_large(exc)
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.code, exc.message, exc.field), status=exc.status_code)
    if isinstance(exc, (Http404, ObjectDoesNotExist)):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, exceptions.ValidationError):
        field, leaf = _first_validation_error(exc.detail)
        code = getattr(leaf, "code", None) or "invalid"
        message = f"{field}: {leaf}" if field else str(leaf)
        response.data = error_body(str(code), message, field)
    else:
        detail = exc.detail if not isinstance(exc.detail, (list, dict)) else str(exc.detail)
        response.data = error_body(str(getattr(detail, "code", None) or exc.default_code), str(detail))
    return response


class OutputSerializer(serializers.ModelSerializer):
    """A ModelSerializer whose fields are worked out from the model once per class: each use
    copies them (0.34 ms for a product's) instead of building them again from the model's
    fields (0.85 ms; every search answer and list page pays it)."""

    def get_fields(self) -> dict[str, serializers.Field]:
        cls = type(self)
        if "_built_fields" not in cls.__dict__:
            cls._built_fields = super().get_fields()
        return copy.deepcopy(cls._built_fields)


# A sliding window per client and scope, checked and counted in one atomic round trip: drop
# the entries older than the window, count the rest, add this request only when it is under
# the limit. Answers {1, 0} (allowed) or {0, ms until the oldest entry leaves the window}.
# Redis's clock, not the web hosts': theirs may disagree.
_SLIDING_WINDOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, 0}
end
local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
return {0, oldest + window - now}
"""


@functools.cache
def _sliding_window() -> Any:
    """The script (sent once, then called by its hash); each call names its thread's client."""
    return get_redis_connection("default").register_script(_SLIDING_WINDOW)


class ScopedThrottle(throttling.ScopedRateThrottle):
    """Per-client rate limits by scope (``API_THROTTLE_RATES``, read at each request).

    A view names its scope in ``throttle_scope``: one for every method, or a dict by HTTP
    method (``{"POST": "upload"}``: listing stays free). Clients are users when
    authenticated, else addresses (behind ``THROTTLE_NUM_PROXIES`` trusted proxies).

    Counted in Redis (the cache) by one script: one round trip where DRF's read-then-write
    of a pickled history takes two, and atomic, so that requests racing from several web
    processes cannot all read the same count and all pass. When Redis fails requests are
    let through (logged), as the cache itself fails open."""

    def allow_request(self, request: Any, view: Any) -> bool:
        scope = getattr(view, self.scope_attr, None)
        if isinstance(scope, dict):
            scope = scope.get(request.method)
        if not scope:
            return True
        self.scope = scope
        self.rate = settings.API_THROTTLE_RATES.get(scope)
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        try:
            allowed, self._wait_ms = _sliding_window()(
                keys=[self.cache.make_key(f"{key}:window")],
                args=[self.duration * 1000, self.num_requests, secrets.token_hex(8)],
                client=get_redis_connection("default"),
            )
        except RedisError as error:
            logger.warning("rate limit %r not checked: Redis failed (%s)", scope, type(error).__name__)
            return True
        return bool(allowed)

    def wait(self) -> float:
        """Seconds until the oldest request in the window leaves it (``Retry-After``)."""
        return max(self._wait_ms, 1) / 1000


class ContentNegotiation(negotiation.DefaultContentNegotiation):
    """DRF's, except that an unknown ``?format=`` is 406 Not Acceptable (DRF says 404, as if
    the resource did not exist)."""

    def filter_renderers(self, renderers: list[Any], format: str) -> list[Any]:  # noqa: A002 - DRF's name
        try:
            return super().filter_renderers(renderers, format)
        except Http404:
            raise exceptions.NotAcceptable(f"No representation '{format[:20]}'; ask for one of "
                                           f"{', '.join(r.format for r in renderers)}.") from None  # fmt: skip


class PageNumberPagination(pagination.PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


def json_404(request: Any, exception: Exception | None = None) -> HttpResponse:
    if not request.path.startswith("/api/"):
        return defaults.page_not_found(request, exception or Http404())
    return JsonResponse(error_body("not_found", f"No route or object at {request.path}"), status=404)


# What Django refuses before a view runs (SuspiciousOperation and kin), said plainly.
_BAD_REQUESTS = {
    "DisallowedHost": ("bad_host", "The Host header names a host this server does not answer to."),
    "TooManyFieldsSent": ("too_many_fields", "The request has more fields than the server accepts."),
    "TooManyFilesSent": ("too_many_files", "The request has more files than the server accepts."),
    "RequestDataTooBig": ("request_too_large", "The request body is larger than the server accepts."),
}


def json_400(request: Any, exception: Exception | None = None) -> HttpResponse:
    if not request.path.startswith("/api/"):
        return defaults.bad_request(request, exception or Exception())
    code, message = _BAD_REQUESTS.get(type(exception).__name__, ("bad_request", "The request is malformed."))
    if isinstance(exception, RequestDataTooBig):
        return JsonResponse(error_body(too_large(exception).code, too_large(exception).message), status=413)
    return JsonResponse(error_body(code, message), status=400)


def json_403(request: Any, exception: Exception | None = None) -> HttpResponse:
    if not request.path.startswith("/api/"):
        return defaults.permission_denied(request, exception or PermissionDenied())
    return JsonResponse(error_body("permission_denied", "You do not have permission to do this."), status=403)


def json_500(request: Any) -> HttpResponse:
    if not request.path.startswith("/api/"):
        return defaults.server_error(request)
    return JsonResponse(error_body("server_error", "Internal server error; it has been logged."), status=500)


def paginated_response(*, queryset: Any, serializer_class: Any, request: Any, view: Any) -> Response:
    paginator = PageNumberPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    data = serializer_class(page, many=True, context={"request": request}).data
    return paginator.get_paginated_response(data)


def paginated_items(*, items: Any, request: Any, view: Any) -> Response:
    """A page of ``items`` (a list of plain rows, or a queryset of them) in the paginated shape."""
    paginator = PageNumberPagination()
    page = paginator.paginate_queryset(items, request, view=view)
    return paginator.get_paginated_response(page)
