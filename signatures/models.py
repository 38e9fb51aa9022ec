from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from pgvector.django import VectorField

from simsite.files import private_storage
from simsite.training_runs import TrainingRun


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
    # How like the signer's other references it is (mean cosine similarity under the encoder
    # that enrolled it, refreshed when the references change); ``outlier`` when far below them.
    consistency = models.FloatField(null=True, blank=True)
    outlier = models.BooleanField(default=False)
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


class WriterModel(models.Model):
    """A signer's own classifier under one encoder (``signatures.writer_models``): trained from
    the signer's first reference, retrained when they change, deleted with the last of them or the
    signer."""

    signer = models.ForeignKey(Signer, on_delete=models.CASCADE, related_name="writer_models")
    encoder = models.CharField(max_length=64)
    references_key = models.CharField(max_length=64, help_text="Hash of the references it was trained on")
    references = models.PositiveIntegerField()
    negatives = models.PositiveIntegerField()
    model = models.BinaryField(help_text="Support vectors, coefficients, intercept, kernel width (numpy arrays)")
    trained_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["signer", "encoder"], name="writer_model_signer_encoder")]

    def __str__(self) -> str:
        return f"{self.encoder} model of {self.signer}"


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

    class Mode(models.TextChoices):
        WRITER_INDEPENDENT = "writer_independent"  # the best cosine similarity to a reference
        WRITER_DEPENDENT = "writer_dependent"  # the signer's own model (``WriterModel``)

    score = models.FloatField(help_text="The score that decided (the mode's), compared with the threshold")
    threshold = models.FloatField()
    decision = models.CharField(max_length=16, choices=Decision.choices)
    mode = models.CharField(max_length=24, choices=Mode.choices, default=Mode.WRITER_INDEPENDENT)
    similarity = models.FloatField(null=True, blank=True, help_text="The best cosine similarity to a reference")
    confidence = models.FloatField(null=True, blank=True, help_text="Calibrated probability of genuine")
    operating_point = models.JSONField(default=dict, blank=True, help_text="What set the threshold")
    references_used = models.PositiveIntegerField()
    per_reference = models.JSONField(default=list)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"verification {self.pk}: {self.decision} for {self.signer}"


class SignatureEncoder(TrainingRun):
    """An encoder trained here: the training run (``simsite.training_runs``), then the model
    (weights, background set and plots under MEDIA_ROOT/models/signatures/<key>/<run>/).

    Queued by ``train_signature_encoder`` or the admin; a worker (queue ``embed``) trains it,
    reporting progress per epoch. Once it has succeeded it is immutable and can be activated.
    """

    files_root = "models/signatures"
    key = models.SlugField(max_length=64, unique=True)
    sources = models.JSONField(default=list, help_text='The training data: [{"layout": ..., "data": folder}, ...]')
    threshold = models.FloatField(null=True, blank=True)
    background = models.CharField(max_length=255, blank=True,
                                  help_text="Vectors of training writers' signatures (storage name): the negatives of "
                                  "each signer's own model")  # fmt: skip
    calibration = models.JSONField(
        default=dict, blank=True, help_text="ROC tables of the validation writers per scoring mode and reference count"
    )

    def __str__(self) -> str:
        return self.key

    def sources_text(self) -> str:
        """``layout:folder-name`` of each source, for people (no server paths)."""
        return ", ".join(f"{source['layout']}:{Path(source['data']).name}" for source in self.sources)
