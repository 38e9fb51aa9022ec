"""Writer-dependent refinement: one small classifier per signer (numpy and scikit-learn; no torch).

The encoder's vectors are writer-independent: good at "same writer or not" for anyone. From a
signer's first reference on, a classifier of their own learns what is particular to them: an
RBF support-vector machine with the signer's references as positives and, as negatives, other
people's signatures (the encoder's background set - its training writers' genuine signatures
and skilled forgeries - and other signers' references), classes weighted equally (SigNet-F's
writer-dependent stage, Hafemann et al. 2017). Its decision value is the writer-dependent
score; the threshold comes from the same procedure run on the encoder's validation writers
(``signatures.training``).

With one reference it is an exemplar SVM, one positive against thousands of negatives, and
still beats the best cosine similarity: on held-out writers (the network before fine-tuning)
skilled-forgery EER 0.094 on CEDAR, 0.199 on the Dutch scans and 0.265 on SVC2004, against
0.153, 0.272 and 0.306; with 3 references 0.053, 0.125, 0.164, against the similarity's
0.100, 0.237, 0.215 with 5.

A model is kept as plain arrays (support vectors, their coefficients, the intercept and the
kernel width), so scoring needs numpy only and nothing is unpickled.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

# Most negatives used in a fit (drawn evenly): a fit stays a fraction of a second.
MAX_NEGATIVES = 2000
# Measured on held-out writers (5 references, EER): C = 10 gave 0.081 on the Dutch set against
# 0.094 with C = 1, and the same on CEDAR.
C = 10.0
# The RBF kernel's gamma, as a multiple of scikit-learn's "scale" heuristic (1 / (features x
# their variance)): a narrower kernel. Held-out writers, the network before fine-tuning, three
# splits averaged, skilled EER with 3 / 5 / 10 references: CEDAR 0.043 / 0.033 / 0.021, Dutch
# 0.108 / 0.092 / 0.072, SVC2004 0.146 / 0.102 / 0.093 at 6, against 0.051 / 0.037 / 0.027,
# 0.107 / 0.095 / 0.079 and 0.165 / 0.112 / 0.095 at 1 (one reference within half a point;
# 4 and 8 close to 6, 16 worse). Encoders trained before it keep 1, the width they were
# calibrated with (``EncoderSpec.writer_gamma_scale``).
GAMMA_SCALE = 6.0


@dataclass(frozen=True)
class WriterClassifier:
    support: np.ndarray  # (n, dim)
    coefficients: np.ndarray  # (n,)
    intercept: float
    gamma: float

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """The decision value of each row: above 0 leans genuine."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        distances = (
            (vectors**2).sum(axis=1)[:, None] + (self.support**2).sum(axis=1)[None, :] - 2 * vectors @ self.support.T
        )
        return np.exp(-self.gamma * np.maximum(distances, 0)) @ self.coefficients + self.intercept

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, support=self.support.astype(np.float32), coefficients=self.coefficients,
                            intercept=np.float64(self.intercept), gamma=np.float64(self.gamma))  # fmt: skip
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> WriterClassifier:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return cls(support=arrays["support"].astype(np.float64), coefficients=arrays["coefficients"],
                       intercept=float(arrays["intercept"]), gamma=float(arrays["gamma"]))  # fmt: skip


def descriptors(vectors: np.ndarray) -> np.ndarray:
    """Encoder vectors as a writer model sees them: each whole vector (similarity part and
    taps, ``signatures.encoders.SignatureNet``) scaled to unit length."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def negatives_choose(negatives: np.ndarray, *, seed: int = 0) -> np.ndarray:
    if len(negatives) <= MAX_NEGATIVES:
        return negatives
    return negatives[np.random.default_rng(seed).choice(len(negatives), size=MAX_NEGATIVES, replace=False)]


def writer_model_fit(
    *, references: np.ndarray, negatives: np.ndarray, gamma_scale: float = GAMMA_SCALE
) -> WriterClassifier:
    """An RBF SVM separating ``references`` (this signer) from ``negatives`` (other people);
    ``gamma_scale``: the kernel's gamma as a multiple of scikit-learn's "scale"."""
    from sklearn.svm import SVC  # scikit-learn loads only where a model is trained

    if len(references) < 1 or len(negatives) < 1:
        raise ValueError("a writer model needs references and negatives")
    negatives = negatives_choose(np.asarray(negatives, dtype=np.float64))
    features = np.vstack([np.asarray(references, dtype=np.float64), negatives])
    labels = np.r_[np.ones(len(references)), np.zeros(len(negatives))]
    gamma = gamma_scale / (features.shape[1] * (features.var() or 1.0))  # as scikit-learn's "scale" does
    classifier = SVC(C=C, kernel="rbf", gamma=gamma, class_weight="balanced").fit(features, labels)
    return WriterClassifier(support=classifier.support_vectors_.copy(), coefficients=classifier.dual_coef_[0].copy(),
                            intercept=float(classifier.intercept_[0]), gamma=float(gamma))  # fmt: skip
