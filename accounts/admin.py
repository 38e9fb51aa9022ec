from __future__ import annotations

from typing import Any

from django.contrib import admin

from accounts.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only: an audit log nobody can edit or delete from the admin."""

    list_display = ["at", "username", "action", "target", "address"]
    list_filter = ["action"]
    search_fields = ["username", "target"]
    date_hierarchy = "at"
    readonly_fields = ["at", "user", "username", "action", "target", "detail", "address"]

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False
