"""A lockout is logged and audited once per account, address and lockout."""

from __future__ import annotations

import logging
from typing import Any

from axes.helpers import get_cool_off
from axes.signals import user_locked_out
from django.dispatch import receiver
from django.utils import timezone

from accounts.models import AuditEntry
from accounts.services import audit_record

logger = logging.getLogger("simsite.security")


@receiver(user_locked_out)
def lockout_record(sender: Any, request: Any, username: str | None, ip_address: str | None, **kwargs: Any) -> None:
    # Axes signals at the lockout and again at every attempt during it: one entry per lockout.
    target = f"account {username or '?'}"
    recent = AuditEntry.objects.filter(action=AuditEntry.Action.LOGIN_LOCKED_OUT, target=target[:255],
                                       address=ip_address, at__gte=timezone.now() - get_cool_off(request))  # fmt: skip
    if recent.exists():
        return
    logger.warning("login locked out: account %r from %s after repeated failures", username, ip_address)
    audit_record(user=None, action=AuditEntry.Action.LOGIN_LOCKED_OUT, target=target, request=request)
