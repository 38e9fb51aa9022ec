"""Login lockout (django-axes) and the client address it and the rate limits share."""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from rest_framework.throttling import BaseThrottle


def client_address(request: Any) -> str | None:
    """The client's address as the rate limits see it: REMOTE_ADDR, or the address named by
    the trusted proxies' X-Forwarded-For (THROTTLE_NUM_PROXIES)."""
    return BaseThrottle().get_ident(request) or None


class LockoutBackend(AxesStandaloneBackend):
    """Refuses logins of an account from an address that failed too often (settings AXES_*).

    Every login that comes from the network passes the request: the login pages, the admin's,
    the token endpoint. A call without one is the code's own (``manage.py`` commands, the test
    client's ``login``): no address to lock, so it is not watched."""

    def authenticate(self, request: Any, username: str | None = None, password: str | None = None,
                     **kwargs: Any) -> None:  # fmt: skip
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
