"""Writes of the accounts app: the audit log."""

from __future__ import annotations

import logging
from typing import Any

from accounts.backends import client_address
from accounts.models import AuditEntry

logger = logging.getLogger("simsite.audit")


def audit_record(*, user: Any, action: str, target: str = "", detail: dict[str, Any] | None = None,
                 request: Any = None) -> AuditEntry:  # fmt: skip
    """Record that ``user`` (None or anonymous: the command line or the system) did ``action``.

    Call it once the action has happened (after its service returned): a refused or failed
    action is not in the log. The entry is also logged, for log shippers."""
    known = user if user is not None and getattr(user, "is_authenticated", False) else None
    address = client_address(request) if request is not None else None
    entry = AuditEntry.objects.create(
        user=known, username=known.get_username() if known else "", action=action, target=target[:255],
        detail=detail or {}, address=address,
    )  # fmt: skip
    logger.info("audit: %s %s %s %s", entry.username or "-", action, target, detail or "")
    return entry
