"""Signature encoders simsite knows: metadata only, no torch (safe to import anywhere).

Pretrained encoders are listed here; encoders trained here are rows of
``signatures.models.SignatureEncoder`` and are found through ``signatures.selectors``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simsite.errors import ServiceError


@dataclass(frozen=True)
class EncoderSpec:
    key: str
    dim: int
    backbone: str  # the search model whose ImageNet features are used
    description: str
    # Cosine similarity at or above which two signatures are called the same writer; set at
    # the equal-error point of skilled forgeries, one reference, on SVC2004 writers 1-24.
    threshold: float
    metrics: dict[str, object] = field(default_factory=dict)
    kind: str = "pretrained"


PRETRAINED: dict[str, EncoderSpec] = {
    spec.key: spec
    for spec in [
        EncoderSpec(
            key="efficientnet_lite0_ink",
            dim=1280,
            backbone="efficientnet_lite0",
            description="ImageNet EfficientNet-Lite0 features of the preprocessed signature (offline baseline)",
            threshold=0.925,
            metrics={
                "dataset": "SVC2004 writers 1-24 (../shared/data), skilled forgeries, 1 reference",
                "eer": 0.354,
                "auc": 0.708,
                "eer_5_references_max": 0.302,
                "random_forgery_eer": 0.059,
            },
        ),
    ]
}


def pretrained_spec(key: str) -> EncoderSpec:
    try:
        return PRETRAINED[key]
    except KeyError:
        raise ServiceError(
            "unknown_model", f"Unknown signature encoder '{key}'.", field="model", status_code=404
        ) from None
