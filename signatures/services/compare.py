"""Two signatures, the same writer or not: nothing is stored."""

from __future__ import annotations

from signatures.selectors import encoder_spec
from signatures.services.inputs import SignatureInput, signatures_embed
from simsite.errors import ServiceError


def threshold_check(threshold: float | None, default: float) -> float:
    if threshold is None:
        return default
    if not -1.0 <= threshold <= 1.0:
        raise ServiceError("invalid_threshold", "threshold must be a cosine similarity between -1 and 1.",
                           field="threshold")  # fmt: skip
    return float(threshold)


def signatures_compare(*, first: SignatureInput, second: SignatureInput, threshold: float | None = None) -> dict:
    """Are these two signatures by the same writer? Cosine similarity of the active encoder's
    vectors against a threshold (default: the encoder's calibrated one)."""
    spec = encoder_spec()
    vectors = spec.similarity_part(signatures_embed(spec, [first.signature, second.signature]))
    similarity = round(float(vectors[0] @ vectors[1]), 4)
    cut = threshold_check(threshold, spec.threshold)
    return {
        "similarity": similarity,
        "threshold": cut,
        "result": "Matched" if similarity >= cut else "Unmatched",
        "model": spec.key,
        "previews": {"image1": first.preview_data_url(), "image2": second.preview_data_url()},
    }
