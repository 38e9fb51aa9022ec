"""Who may do what: the rule each operation follows, for the API and the pages alike.

A rule is one of
- ``ANYONE``: open to every visitor (health, the token endpoint, signature comparison);
- ``read(area)``: public when the collection ``area`` ("catalog" or "gallery") is named in
  ``PUBLIC_READ``, else it needs that collection's view permission;
- ``needs(*perms)``: a login with every one of these Django permissions (superusers have all).

Anonymous visitors refused get 401 (the API) or the login page (pages); users without the
permission get 403. Each API view names its rules in ``access`` by HTTP method; the DRF
permission class ``AccessPolicy`` (the project's default) applies them, and refuses a method
that has no rule to everyone but superusers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from rest_framework import exceptions, permissions

# The view permission that opens a collection to users when it is not public.
AREAS = {"catalog": "catalog.view_product", "gallery": "catalog.view_galleryimage"}
AREA_NAMES = {"catalog": "The catalog", "gallery": "The image library"}


@dataclass(frozen=True)
class Rule:
    perms: tuple[str, ...] = ()
    area: str | None = None
    anyone: bool = False
    open_when: str | None = None  # a setting that, when on, opens the operation to everyone
    superuser: bool = False  # superusers only (a method a view gives no rule)

    def refusal(self, user: Any) -> tuple[int, str] | None:
        """None when ``user`` may; else (401 or 403, a message saying what is missing)."""
        if self.anyone or (self.area and self.area in settings.PUBLIC_READ):
            return None
        if self.open_when and getattr(settings, self.open_when):
            return None
        if not (user and user.is_authenticated):
            if self.area:
                return 401, f"{AREA_NAMES[self.area]} is not public on this server: log in to see it."
            return 401, "Log in to do this (a session, or 'Authorization: Token <key>' from /api/v1/auth/token/)."
        if self.superuser and not user.is_superuser:
            return 403, "Only administrators (superusers) may do this."
        missing = [perm for perm in self.perms if not user.has_perm(perm)]
        if missing:
            return 403, f"You lack the permission this needs ({', '.join(missing)}); ask an administrator."
        return None

    def allows(self, user: Any) -> bool:
        return self.refusal(user) is None

    def check(self, user: Any) -> None:
        """Raise DRF's NotAuthenticated (401) or PermissionDenied (403) when ``user`` may not."""
        refusal = self.refusal(user)
        if refusal is None:
            return
        status, message = refusal
        if status == 401:
            raise exceptions.NotAuthenticated(message)
        raise exceptions.PermissionDenied(message)


ANYONE = Rule(anyone=True)
SUPERUSER = Rule(superuser=True)


def read(area: str) -> Rule:
    return Rule(perms=(AREAS[area],), area=area)


def needs(*perms: str) -> Rule:
    return Rule(perms=perms)


def seed_write(*perms: str) -> Rule:
    """A write of the earlier tools' routes: ``needs(*perms)``, or anyone while
    ``SEED_ROUTES_OPEN_WRITES`` is on (a trusted network, as those tools assumed)."""
    return Rule(perms=perms, open_when="SEED_ROUTES_OPEN_WRITES")


def readable_areas(user: Any) -> set[str]:
    """The collections ``user`` may read."""
    return {area for area in AREAS if read(area).allows(user)}


def require_areas(user: Any, areas: Iterable[str]) -> None:
    """Refuse (401/403) unless ``user`` may read every collection in ``areas``: a search over a
    collection that is not public is refused, never silently narrowed."""
    for area in sorted(set(areas)):
        read(area).check(user)


def rule_for(view: Any, method: str) -> Rule:
    """The view's rule for ``method`` (HEAD follows GET; OPTIONS describes, so it is open)."""
    if method == "OPTIONS":
        return ANYONE
    rules = getattr(view, "access", None) or {}
    rule = rules.get("GET" if method == "HEAD" else method)
    if rule is not None:
        return rule
    if not hasattr(view, method.lower()):
        return ANYONE  # not an operation of this view: DRF answers 405 next
    return SUPERUSER


class AccessPolicy(permissions.BasePermission):
    """Applies the view's ``access`` rules (see the module's docstring)."""

    def has_permission(self, request: Any, view: Any) -> bool:
        rule_for(view, request.method).check(request.user)
        return True
