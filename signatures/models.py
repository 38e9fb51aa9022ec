from __future__ import annotations

from django.conf import settings
from django.db import models
from pgvector.django import VectorField

from simsite.files import private_storage


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
    """One enrolled genuine signature of a signer (file under signatures/ in the private storage)."""

    signer = models.ForeignKey(Signer, on_delete=models.CASCADE, related_name="references")
    file = models.FileField(max_length=255, storage=private_storage)
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
    questioned = models.FileField(max_length=255, storage=private_storage)
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


class SignatureEncoder(models.Model):
    """An encoder trained here: the training run, then the model (weights under MEDIA_ROOT).

    Queued by ``train_signature_encoder`` or the admin; a worker (queue ``embed``) trains it,
    reporting progress per epoch. Once it has succeeded it is immutable and can be activated.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    key = models.SlugField(max_length=64, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    message = models.CharField(max_length=300, blank=True, help_text="What it is doing, or why it failed")
    data = models.CharField(max_length=1024, help_text="The training data folder")
    layout = models.CharField(max_length=16)
    fingerprint = models.CharField(max_length=64, blank=True)
    config = models.JSONField(default=dict, help_text="Training settings (epochs, loss, dimension, ...)")
    dim = models.PositiveIntegerField(default=0)
    threshold = models.FloatField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    curves = models.JSONField(default=dict, blank=True)
    weights = models.CharField(max_length=255, blank=True, help_text="Weights file (storage name)")
    plots = models.JSONField(default=dict, blank=True, help_text="Plot name -> storage name")
    seconds = models.FloatField(null=True, blank=True)
    activate_when_done = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.key
