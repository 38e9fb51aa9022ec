"""Reads of the accounts app: the audit log."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from accounts.models import AuditEntry


def audit_list(*, action: str | None = None, user: str | None = None, since: datetime | None = None) -> QuerySet:
    """Audit entries, newest first; ``user`` is a username."""
    entries = AuditEntry.objects.all()
    if action:
        entries = entries.filter(action=action)
    if user:
        entries = entries.filter(username=user)
    if since:
        entries = entries.filter(at__gte=since)
    return entries.order_by("-at", "-id")
