"""Reads for signatures: the active encoder, signers and their references."""

from __future__ import annotations

import io
import logging
from dataclasses import replace

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import Count, QuerySet

from signatures.models import ActiveEncoder, Reference, SignatureEncoder, Signer, Verification
from signatures.registry import PRETRAINED, EncoderSpec, pretrained_spec
from simsite.errors import ServiceError

logger = logging.getLogger(__name__)


def active_encoder_key() -> str:
    row = ActiveEncoder.objects.filter(pk=1).values_list("key", flat=True).first()
    return row or settings.SIGNATURE_DEFAULT_ENCODER


def trained_spec(encoder: SignatureEncoder) -> EncoderSpec:
    return EncoderSpec(
        key=encoder.key,
        dim=encoder.dim,
        backbone="efficientnet_lite0",
        description=f"Trained here ({encoder.config.get('loss', 'triplet')} loss) on {encoder.sources_text()}, "
        f"{encoder.metrics.get('training_writer_count', '?')} writers",
        threshold=float(encoder.threshold if encoder.threshold is not None else 0.0),
        metrics={**encoder.metrics, "fingerprint": encoder.fingerprint, "curves": encoder.curves},
        kind="trained",
        weights=encoder.weights,
        thresholds=encoder.metrics.get("thresholds", {}),
        calibration=encoder.calibration,
        background=encoder.background,
        similarity_dim=int(encoder.metrics.get("similarity_dim", 0)),
        writer_gamma_scale=float(encoder.metrics.get("writer_gamma_scale", 1.0)),  # 1: trained before it was chosen
    )


def encoder_spec(key: str | None = None) -> EncoderSpec:
    """The encoder ``key`` (default: the active one): pretrained, or trained here and ready."""
    key = key or active_encoder_key()
    if key in PRETRAINED:
        return PRETRAINED[key]
    encoder = SignatureEncoder.objects.filter(key=key).first()
    if encoder is None:
        return pretrained_spec(key)  # refuses with the registry's 404
    if encoder.status != SignatureEncoder.Status.SUCCEEDED:
        raise ServiceError("encoder_not_ready", f"Signature encoder '{key}' is {encoder.status}, not ready to use.",
                           field="model", status_code=409)  # fmt: skip
    return trained_spec(encoder)


_backgrounds: dict[str, np.ndarray] = {}


def encoder_background(spec: EncoderSpec) -> np.ndarray | None:
    """The encoder's background set (vectors of its training writers' genuine signatures),
    read once per process; None for an encoder without one (the pretrained ones)."""
    if not spec.background:
        return None
    if spec.background not in _backgrounds:
        try:
            with default_storage.open(spec.background, "rb") as handle:
                background = np.load(io.BytesIO(handle.read()), allow_pickle=False)
        except FileNotFoundError:
            logger.error("the background set of signature encoder %s is missing: writer-independent only", spec.key)
            return None
        except (OSError, ValueError) as exc:  # truncated, overwritten, not an .npy (a pickle is refused too)
            logger.error("the background set of signature encoder %s cannot be read (%s): writer-independent only",
                         spec.key, exc)  # fmt: skip
            return None
        if background.ndim != 2 or background.shape[1] != spec.dim:
            logger.error("the background set of signature encoder %s has shape %s, not (n, %d): writer-independent "
                         "only", spec.key, background.shape, spec.dim)  # fmt: skip
            return None
        _backgrounds[spec.background] = background
    return _backgrounds[spec.background]


def encoder_background_forget(name: str) -> None:
    """Drop a deleted encoder's background set from this process's cache."""
    _backgrounds.pop(name, None)


def _listed(spec: EncoderSpec, active: str, **state: object) -> dict[str, object]:
    return {
        "key": spec.key,
        "kind": spec.kind,
        "dim": spec.dim,
        "description": spec.description,
        "threshold": spec.threshold,
        "thresholds": spec.thresholds,
        "eer": spec.metrics.get("eer"),
        "auc": spec.metrics.get("auc"),
        "dataset": spec.metrics.get("dataset"),
        "metrics": {k: v for k, v in spec.metrics.items() if k not in ("curves", "training_writers")},
        "active": spec.key == active,
        "status": "succeeded",
        "progress": 1.0,
        "message": "",
        "plots": {},
        **state,
    }


def encoder_list() -> list[dict[str, object]]:
    """Every encoder: the pretrained ones, then those trained here (newest first, training
    runs in progress or failed included, with their state)."""
    active = active_encoder_key()
    listed = [_listed(spec, active) for spec in PRETRAINED.values()]
    for encoder in SignatureEncoder.objects.all():
        spec = trained_spec(encoder)
        if encoder.status != SignatureEncoder.Status.SUCCEEDED:
            spec = replace(spec, threshold=None, thresholds={})
        plots = {name: default_storage.url(stored) for name, stored in encoder.plots.items()}
        listed.append(_listed(spec, active, status=encoder.status, progress=round(encoder.progress, 3),
                              message=encoder.message, plots=plots))  # fmt: skip
    return listed


def signer_list() -> QuerySet[Signer]:
    return Signer.objects.annotate(reference_count=Count("references")).order_by("name", "pk")


def signer_get(*, pk: int) -> Signer:
    return signer_list().get(pk=pk)


def reference_list(*, signer: Signer) -> QuerySet[Reference]:
    return Reference.objects.filter(signer=signer).order_by("pk")


def reference_get(*, signer_pk: int, pk: int) -> Reference:
    return Reference.objects.get(signer_id=signer_pk, pk=pk)


def verification_list(*, signer: Signer | None = None) -> QuerySet[Verification]:
    queryset = Verification.objects.select_related("signer")
    return queryset.filter(signer=signer) if signer is not None else queryset
