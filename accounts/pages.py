"""The access rules and rate limits of the API, applied to the server-rendered pages."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.access import Rule
from simsite.drf import ScopedThrottle


def page_refusal(request: HttpRequest, rule: Rule) -> HttpResponse | None:
    """None when the visitor may; else the login page for anonymous visitors, a 403 page for
    users without the permission."""
    refusal = rule.refusal(request.user)
    if refusal is None:
        return None
    status, message = refusal
    if status == 401:
        return redirect_to_login(request.get_full_path())
    return render(request, "403.html", {"message": message}, status=403)


def page_access(rule: Rule) -> Callable:
    """Decorate a page view: it runs only for visitors ``rule`` allows."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            return page_refusal(request, rule) or view(request, *args, **kwargs)

        return wrapped

    return decorate


class _Scoped:
    """What ScopedThrottle reads of a view."""

    def __init__(self, scope: str) -> None:
        self.throttle_scope = scope


def page_throttled(request: HttpRequest, scope: str) -> HttpResponse | None:
    """The friendly 429 page when this client is over the API's rate for ``scope``, else None."""
    throttle = ScopedThrottle()
    if throttle.allow_request(request, _Scoped(scope)):
        return None
    wait = math.ceil(throttle.wait())
    response = render(request, "429.html", {"wait": wait}, status=429)
    response["Retry-After"] = str(wait)
    return response


def page_throttle(scope: str, *, methods: tuple[str, ...] = ("GET", "POST")) -> Callable:
    """Decorate a page view that runs the model or long statements: the same per-client rate
    as the API's ``scope`` (``API_THROTTLE_RATES``), counted for ``methods`` only."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method in methods and (refused := page_throttled(request, scope)):
                return refused
            return view(request, *args, **kwargs)

        return wrapped

    return decorate
