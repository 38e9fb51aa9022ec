from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from accounts.access import readable_areas


def access(request: HttpRequest) -> dict[str, Any]:
    """``readable``: the collections this visitor may read (pages show only what they may use;
    ``perms`` gives the rest)."""
    return {"readable": readable_areas(request.user)}
