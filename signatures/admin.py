from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from signatures.models import Reference, Signer, Verification
from signatures.services import reference_delete, signer_delete


def _image(url: str, height: int = 60) -> str:
    return format_html('<img src="{}" height="{}" alt="" loading="lazy">', url, height)


class ReferenceInline(admin.TabularInline):
    model = Reference
    fields = ["preview", "original_filename", "width", "height", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False  # references are enrolled and removed through the API (files are shared)

    @admin.display(description="Signature")
    def preview(self, obj: Reference) -> str:
        return _image(obj.file.url)


@admin.register(Signer)
class SignerAdmin(admin.ModelAdmin):
    list_display = ["name", "external_id", "created_at"]
    search_fields = ["name", "external_id"]
    inlines = [ReferenceInline]

    def delete_model(self, request: HttpRequest, obj: Signer) -> None:
        signer_delete(signer=obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for signer in queryset:
            signer_delete(signer=signer)


@admin.register(Reference)
class ReferenceAdmin(admin.ModelAdmin):
    list_display = ["preview", "signer", "original_filename", "created_at"]
    list_select_related = ["signer"]
    search_fields = ["signer__name", "original_filename"]
    readonly_fields = ["signer", "file", "original_filename", "sha256", "width", "height", "created_at"]

    @admin.display(description="Signature")
    def preview(self, obj: Reference) -> str:
        return _image(obj.file.url)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # enrolment validates and embeds through the API

    def delete_model(self, request: HttpRequest, obj: Reference) -> None:
        reference_delete(reference=obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for reference in queryset:
            reference_delete(reference=reference)


@admin.register(Verification)
class VerificationAdmin(admin.ModelAdmin):
    """The verification log: read-only."""

    list_display = ["created_at", "signer", "decision", "score", "threshold", "encoder", "requested_by"]
    list_filter = ["decision", "encoder"]
    search_fields = ["signer__name", "signer__external_id"]
    readonly_fields = ["questioned_image", "signer", "decision", "score", "threshold", "encoder", "references_used",
                       "per_reference", "requested_by", "created_at", "questioned_sha256"]  # fmt: skip
    fields = readonly_fields

    @admin.display(description="Questioned signature")
    def questioned_image(self, obj: Verification) -> str:
        return _image(obj.questioned.url, 120)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
