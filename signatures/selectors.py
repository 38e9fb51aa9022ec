"""Reads for signatures: the active encoder, signers and their references."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count, QuerySet

from signatures.models import ActiveEncoder, Reference, Signer, Verification
from signatures.registry import PRETRAINED, EncoderSpec, pretrained_spec


def active_encoder_key() -> str:
    row = ActiveEncoder.objects.filter(pk=1).values_list("key", flat=True).first()
    return row or settings.SIGNATURE_DEFAULT_ENCODER


def encoder_spec(key: str | None = None) -> EncoderSpec:
    return pretrained_spec(key or active_encoder_key())


def encoder_list() -> list[dict[str, object]]:
    active = active_encoder_key()
    return [
        {
            "key": spec.key,
            "kind": spec.kind,
            "dim": spec.dim,
            "description": spec.description,
            "threshold": spec.threshold,
            "eer": spec.metrics.get("eer"),
            "auc": spec.metrics.get("auc"),
            "dataset": spec.metrics.get("dataset"),
            "metrics": spec.metrics,
            "active": spec.key == active,
        }
        for spec in PRETRAINED.values()
    ]


def signer_list() -> QuerySet[Signer]:
    return Signer.objects.annotate(reference_count=Count("references"))


def signer_get(*, pk: int) -> Signer:
    return signer_list().get(pk=pk)


def reference_list(*, signer: Signer) -> QuerySet[Reference]:
    return Reference.objects.filter(signer=signer).order_by("pk")


def reference_get(*, signer_pk: int, pk: int) -> Reference:
    return Reference.objects.get(signer_id=signer_pk, pk=pk)


def verification_list(*, signer: Signer | None = None) -> QuerySet[Verification]:
    queryset = Verification.objects.select_related("signer")
    return queryset.filter(signer=signer) if signer is not None else queryset
