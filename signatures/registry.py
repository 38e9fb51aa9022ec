"""Signature encoders simsite knows: metadata only, no torch (safe to import anywhere).

Pretrained encoders are listed here; encoders trained here are rows of
``signatures.models.SignatureEncoder`` and are found through ``signatures.selectors``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simsite.errors import ServiceError


@dataclass(frozen=True)
class EncoderSpec:
    key: str
    dim: int
    backbone: str  # the search model whose ImageNet features are used
    description: str
    # Cosine similarity at or above which two signatures are called the same writer (one
    # reference), at the equal-error point of skilled forgeries.
    threshold: float
    metrics: dict[str, object] = field(default_factory=dict)
    kind: str = "pretrained"  # or "trained" (here)
    weights: str = ""  # a trained encoder's weights file (storage name)
    # With several references the best match is higher for genuine and forged alike: the
    # equal-error threshold per reference count ("3": ...), where it was measured.
    thresholds: dict[str, float] = field(default_factory=dict)
    # Pretrained: 0 = the backbone's own (head) features; n = generalised-mean pooling of the
    # output of its first n blocks (EfficientNet-Lite0 only).
    feature_blocks: int = 0
    # Trained here: ROC tables of the validation writers (signatures.calibration) and the
    # background set's storage name (the negatives of the signers' own models).
    calibration: dict[str, dict] = field(default_factory=dict)
    background: str = ""
    # The vector's first ``similarity_dim`` components (unit length) are what cosine similarity
    # compares; the whole vector, normalised, is what a signer's own model sees. 0: all of it.
    similarity_dim: int = 0
    # The signers' own models' kernel width (``signatures.writer_models.GAMMA_SCALE``) that the
    # encoder's writer-dependent calibration was measured with: enrolment fits with the same.
    writer_gamma_scale: float = 1.0

    def similarity_part(self, vectors: np.ndarray) -> np.ndarray:
        return vectors[..., : self.similarity_dim] if self.similarity_dim else vectors

    def threshold_for(self, references: int) -> float:
        """The threshold measured with the most references not above ``references``."""
        counts = [int(count) for count in self.thresholds if int(count) <= references]
        return self.thresholds[str(max(counts))] if counts else self.threshold


# Thresholds: the skilled-forgery equal-error points on SVC2004 writers 1-24 (the writer
# protocol, max over the references, five seeded draws pooled), by reference count.
PRETRAINED: dict[str, EncoderSpec] = {
    spec.key: spec
    for spec in [
        EncoderSpec(
            key="efficientnet_lite0_strokes",
            dim=112,
            backbone="efficientnet_lite0",
            description="ImageNet EfficientNet-Lite0 features after 11 of its 16 blocks, GeM-pooled: strokes and "
            "their turns rather than objects (offline, default)",
            threshold=0.9945,
            thresholds={"1": 0.9945, "3": 0.9954, "5": 0.9957},
            metrics={
                "dataset": "SVC2004 writers 1-24 (../shared/data), skilled forgeries, 1 reference",
                "eer": 0.289,
                "auc": 0.778,
                "eer_5_references_max": 0.210,
                "random_forgery_eer": 0.046,
            },
            feature_blocks=11,
        ),
        EncoderSpec(
            key="efficientnet_lite0_ink",
            dim=1280,
            backbone="efficientnet_lite0",
            description="ImageNet EfficientNet-Lite0 (head) features of the preprocessed signature, as the earlier "
            "tool did with ResNet-101 (offline baseline)",
            threshold=0.9241,
            thresholds={"1": 0.9241, "3": 0.9402, "5": 0.9451},
            metrics={
                "dataset": "SVC2004 writers 1-24 (../shared/data), skilled forgeries, 1 reference",
                "eer": 0.352,
                "auc": 0.703,
                "eer_5_references_max": 0.312,
                "random_forgery_eer": 0.066,
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
