from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from accounts.models import AuditEntry
from accounts.services import audit_record
from signatures.datasets import LAYOUTS, Source, source_parse
from signatures.models import Reference, SignatureEncoder, Signer, Verification
from signatures.selectors import active_encoder_key
from signatures.services.encoders import (
    DEFAULT_EPOCHS,
    DEFAULT_MINUTES,
    encoder_activate,
    encoder_delete,
    encoder_training_start,
    encoder_training_validate,
)
from signatures.services.enrolment import reference_delete, signer_delete
from simsite.errors import ServiceError
from simsite.files import resolve_under_root


def _image(url: str, height: int = 60) -> str:
    return format_html('<img src="{}" height="{}" alt="" loading="lazy">', url, height)


def _reference_url(reference: Reference) -> str:
    """Signatures have no public URL: the authorised view serves them."""
    return reverse("signatures:reference-image", args=[reference.signer_id, reference.pk])


def _reference_image(reference: Reference, height: int = 60) -> str:
    return _image(_reference_url(reference), height) if reference.pk else "–"


class ReferenceInline(admin.TabularInline):
    model = Reference
    fields = ["preview", "original_filename", "width", "height", "consistency", "outlier", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False  # references are enrolled and removed through the API (files are shared)

    @admin.display(description="Signature")
    def preview(self, obj: Reference) -> str:
        return _reference_image(obj)


@admin.register(Signer)
class SignerAdmin(admin.ModelAdmin):
    list_display = ["name", "external_id", "created_at"]
    search_fields = ["name", "external_id"]
    inlines = [ReferenceInline]

    def delete_model(self, request: HttpRequest, obj: Signer) -> None:
        pk = obj.pk
        signer_delete(signer=obj)
        audit_record(user=request.user, action=AuditEntry.Action.SIGNER_DELETE, target=f"signer {pk}",
                     detail={"via": "admin"}, request=request)  # fmt: skip

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for signer in queryset:
            self.delete_model(request, signer)


@admin.register(Reference)
class ReferenceAdmin(admin.ModelAdmin):
    list_display = ["preview", "signer", "original_filename", "consistency", "outlier", "created_at"]
    list_filter = ["outlier"]
    list_select_related = ["signer"]
    search_fields = ["signer__name", "original_filename"]
    readonly_fields = ["signer", "preview", "original_filename", "sha256", "width", "height", "consistency", "outlier",
                       "created_at"]  # fmt: skip

    @admin.display(description="Signature")
    def preview(self, obj: Reference) -> str:
        return _reference_image(obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # enrolment validates and embeds through the API

    def delete_model(self, request: HttpRequest, obj: Reference) -> None:
        pk, signer = obj.pk, obj.signer_id
        reference_delete(reference=obj)
        audit_record(user=request.user, action=AuditEntry.Action.REFERENCE_DELETE,
                     target=f"reference {pk} of signer {signer}", detail={"via": "admin"}, request=request)  # fmt: skip

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for reference in queryset:
            self.delete_model(request, reference)


@admin.register(Verification)
class VerificationAdmin(admin.ModelAdmin):
    """The verification log: read-only."""

    list_display = ["created_at", "signer", "decision", "mode", "score", "threshold", "confidence", "encoder",
                    "requested_by"]  # fmt: skip
    list_filter = ["decision", "mode", "encoder"]
    search_fields = ["signer__name", "signer__external_id"]
    readonly_fields = ["questioned_image", "signer", "decision", "mode", "score", "threshold", "similarity",
                       "confidence", "operating_point", "encoder", "references_used", "per_reference", "requested_by",
                       "created_at", "questioned_sha256"]  # fmt: skip
    fields = readonly_fields

    @admin.display(description="Questioned signature")
    def questioned_image(self, obj: Verification) -> str:
        return _image(reverse("signatures:verification-image", args=[obj.pk]), 120)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class EncoderTrainingForm(forms.ModelForm):
    """Start a training run: data under SIGNATURE_TRAINING_ROOT, trained by a worker."""

    key = forms.SlugField(required=False, max_length=64, help_text="Blank: signet-<date>-<time>")
    data = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=f"One source per line, LAYOUT:FOLDER (layouts: {', '.join(LAYOUTS)}), each folder relative to "
        "SIGNATURE_TRAINING_ROOT; several sources are trained on together",
    )
    epochs = forms.IntegerField(min_value=1, max_value=500, initial=DEFAULT_EPOCHS)
    minutes = forms.FloatField(
        required=False,
        min_value=1,
        max_value=1440,
        help_text=f"Time budget: training stops after this many minutes (blank: {DEFAULT_MINUTES:g})",
    )
    loss = forms.ChoiceField(choices=[("triplet", "triplet"), ("contrastive", "contrastive")])
    activate = forms.BooleanField(required=False, help_text="Make it the active encoder when trained")

    class Meta:
        model = SignatureEncoder
        fields = ["key"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        root = settings.SIGNATURE_TRAINING_ROOT
        if root is None:
            raise forms.ValidationError("Set SIGNATURE_TRAINING_ROOT (the folder training data may be read from), "
                                        "or train with `manage.py train_signature_encoder`.")  # fmt: skip
        sources = []
        for line in filter(None, (line.strip() for line in cleaned.get("data", "").splitlines())):
            try:
                source = source_parse(line)
            except ServiceError as error:
                self.add_error("data", error.message)
                continue
            folder = resolve_under_root(root, str(source.root))
            if folder is None:
                self.add_error("data", f"{source.root.name or line}: the folder must be inside "
                               "SIGNATURE_TRAINING_ROOT.")  # fmt: skip
                continue
            sources.append(Source(source.layout, folder))
        cleaned["sources"] = sources
        if not self.errors:
            try:
                encoder_training_validate(key=cleaned.get("key"), sources=sources, epochs=cleaned["epochs"],
                                          minutes=cleaned.get("minutes"), loss=cleaned["loss"])  # fmt: skip
            except ServiceError as error:
                self.add_error(error.field if error.field in self.fields else None, error.message)
        return cleaned


@admin.register(SignatureEncoder)
class SignatureEncoderAdmin(admin.ModelAdmin):
    """Signature encoders trained here: start a training, follow it, see its metrics and
    plots, activate it."""

    list_display = ["key", "status", "progress_percent", "eer", "threshold", "is_active", "created_at"]
    list_filter = ["status"]
    actions = ["activate"]
    readonly_fields = ["key", "status", "progress_percent", "message", "is_active", "sources_text", "config",
                       "threshold", "dim", "metrics_table", "plot_images", "fingerprint", "seconds", "created_at",
                       "finished_at"]  # fmt: skip
    fields = readonly_fields

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = EncoderTrainingForm
            kwargs["fields"] = None
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["key", "data", "epochs", "minutes", "loss", "activate"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a training run is started (added) and followed, never edited

    def save_model(self, request: HttpRequest, obj: SignatureEncoder, form: Any, change: bool) -> None:
        data = form.cleaned_data
        encoder = encoder_training_start(
            key=data["key"],
            sources=data["sources"],
            epochs=data["epochs"],
            minutes=data.get("minutes"),
            loss=data["loss"],
            activate=data["activate"],
        )
        obj.pk, obj.key = encoder.pk, encoder.key
        audit_record(user=request.user, action=AuditEntry.Action.ENCODER_TRAIN,
                     target=f"signature encoder {encoder.key}",
                     detail={"sources": encoder.sources_text(), "via": "admin"}, request=request)  # fmt: skip

    def delete_model(self, request: HttpRequest, obj: SignatureEncoder) -> None:
        key = obj.key
        encoder_delete(encoder=obj)
        audit_record(user=request.user, action=AuditEntry.Action.ENCODER_DELETE, target=f"signature encoder {key}",
                     detail={"via": "admin"}, request=request)  # fmt: skip

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for encoder in queryset:
            try:
                self.delete_model(request, encoder)
            except ServiceError as error:  # the active one, or one being trained: kept, and said why
                self.message_user(request, error.message, messages.ERROR)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> Any:
        try:
            return super().delete_view(request, object_id, extra_context)
        except ServiceError as error:
            self.message_user(request, error.message, messages.ERROR)
            return HttpResponseRedirect(reverse("admin:signatures_signatureencoder_changelist"))

    @admin.action(description="Activate (compare and verify use it)")
    def activate(self, request: HttpRequest, queryset: Any) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one encoder to activate.", messages.ERROR)
            return
        try:
            key = encoder_activate(key=queryset.get().key)
        except ServiceError as error:
            self.message_user(request, error.message, messages.ERROR)
            return
        audit_record(user=request.user, action=AuditEntry.Action.ENCODER_ACTIVATE, target=f"signature encoder {key}",
                     detail={"via": "admin"}, request=request)  # fmt: skip
        self.message_user(request, f"{key} is now the active signature encoder.")

    @admin.display(description="Training data")
    def sources_text(self, obj: SignatureEncoder) -> str:
        return obj.sources_text()

    @admin.display(description="Progress")
    def progress_percent(self, obj: SignatureEncoder) -> str:
        return f"{obj.progress:.0%}"

    @admin.display(description="Active", boolean=True)
    def is_active(self, obj: SignatureEncoder) -> bool:
        return obj.key == active_encoder_key()

    @admin.display(description="EER (validation, 1 ref.)")
    def eer(self, obj: SignatureEncoder) -> object:
        return obj.metrics.get("eer", "-")

    @admin.display(description="Metrics (validation writers)")
    def metrics_table(self, obj: SignatureEncoder) -> str:
        rows = [
            (count.replace("_", " "), kind, values)
            for count, kinds in obj.metrics.get("validation", {}).items()
            for kind, values in kinds.items()
        ]
        if not rows:
            return "-"
        return format_html(
            "<table><tr><th>references</th><th>forgeries</th><th>EER</th><th>AUC</th><th>FAR</th><th>FRR</th>"
            "<th>accuracy</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                ((c, k, v["eer"], v["auc"], v["far"], v["frr"], v["accuracy"]) for c, k, v in rows),
            ),
        )

    @admin.display(description="Plots")
    def plot_images(self, obj: SignatureEncoder) -> str:
        return format_html_join(
            "", '<a href="{0}"><img src="{0}" alt="{1}" height="220" loading="lazy"></a> ',
            ((default_storage.url(name), label) for label, name in obj.plots.items()),
        ) or "-"  # fmt: skip
