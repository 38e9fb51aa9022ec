from __future__ import annotations

from django.conf import settings
from django.db import models
from pgvector.django import VectorField


class Signer(models.Model):
    """A person whose reference signatures are on file."""

    name = models.CharField(max_length=255)
    external_id = models.CharField(max_length=128, blank=True, help_text="The signer's id in your own system")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["external_id"], condition=~models.Q(external_id=""), name="signer_external_id_unique"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Reference(models.Model):
    """One enrolled genuine signature of a signer (file stored under signatures/)."""

    signer = models.ForeignKey(Signer, on_delete=models.CASCADE, related_name="references")
    file = models.FileField(max_length=255)
    original_filename = models.CharField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["signer", "id"]

    def __str__(self) -> str:
        return f"reference {self.pk} of {self.signer}"


class ReferenceVector(models.Model):
    """A reference's vector under one encoder (computed at enrolment, or when first needed)."""

    reference = models.ForeignKey(Reference, on_delete=models.CASCADE, related_name="vectors")
    encoder = models.CharField(max_length=64)
    vector = VectorField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["reference", "encoder"], name="reference_vector_encoder")]

    def __str__(self) -> str:
        return f"{self.encoder} vector of reference {self.reference_id}"


class ActiveEncoder(models.Model):
    """The encoder compare and verify use (one row; absent means SIGNATURE_DEFAULT_ENCODER)."""

    key = models.CharField(max_length=64)
    activated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.key


class Verification(models.Model):
    """The log of every verification: what was asked, with which model, and the answer."""

    class Decision(models.TextChoices):
        GENUINE = "genuine"
        FORGED = "forged"

    signer = models.ForeignKey(Signer, on_delete=models.CASCADE, related_name="verifications")
    questioned = models.FileField(max_length=255)
    questioned_sha256 = models.CharField(max_length=64)
    encoder = models.CharField(max_length=64)
    score = models.FloatField()
    threshold = models.FloatField()
    decision = models.CharField(max_length=16, choices=Decision.choices)
    references_used = models.PositiveIntegerField()
    per_reference = models.JSONField(default=list)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"verification {self.pk}: {self.decision} for {self.signer}"
