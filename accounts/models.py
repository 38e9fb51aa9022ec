from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEntry(models.Model):
    """Who did what, when, from where: one row per audited action (read-only everywhere).

    ``username`` is kept beside the user so that an entry still names its author after the
    account is deleted. Verifications are also kept in their own log
    (``signatures.Verification``)."""

    class Action(models.TextChoices):
        SIGNER_CREATE = "signer_create"
        SIGNER_DELETE = "signer_delete"
        REFERENCES_ENROL = "references_enrol"
        REFERENCE_DELETE = "reference_delete"
        SIGNATURE_VERIFY = "signature_verify"
        MODEL_TRAIN = "model_train"
        MODEL_ACTIVATE = "model_activate"
        MODEL_DELETE = "model_delete"
        ENCODER_TRAIN = "encoder_train"
        ENCODER_ACTIVATE = "encoder_activate"
        ENCODER_DELETE = "encoder_delete"
        GALLERY_DELETE = "gallery_delete"
        DUPLICATES_KEEP = "duplicates_keep"
        DUPLICATES_DISMISS = "duplicates_dismiss"
        PRODUCT_IMPORT = "product_import"
        LOGIN_LOCKED_OUT = "login_locked_out"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, blank=True, help_text="Empty: the command line or the system")
    action = models.CharField(max_length=32, choices=Action.choices, db_index=True)
    target = models.CharField(max_length=255, blank=True, help_text="What it was done to, e.g. 'signer 12'")
    detail = models.JSONField(default=dict, blank=True)
    address = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username or '-'} {self.action} {self.target}"
