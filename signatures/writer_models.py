"""Writer-dependent refinement: one small classifier per signer (numpy and scikit-learn; no torch).

The encoder's vectors are writer-independent: good at "same writer or not" for anyone. From a
signer's first reference on, a classifier of their own learns what is particular to them: an
RBF support-vector machine with the signer's references as positives and, as negatives, the
genuine signatures of other people (the encoder's background set - its training writers - and
other signers' references), classes weighted equally (SigNet-F's writer-dependent stage,
Hafemann et al. 2017). Its decision value is the writer-dependent score; the threshold comes
from the same procedure run on the encoder's validation writers (``signatures.training``).

A model is kept as plain arrays (support vectors, their coefficients, the intercept and the
kernel width), so scoring needs numpy only and nothing is unpickled.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

# From the first reference on (an exemplar SVM: one positive against thousands of negatives,
# the skilled forgeries of the background set among them), the signer's own model decides: on
# held-out writers (the network before fine-tuning) its skilled-forgery EER with 1 reference
# was 0.094 on CEDAR, 0.199 on the Dutch scans and 0.265 on SVC2004, against 0.153, 0.272 and
# 0.306 for the best cosine similarity; with 3 references 0.053, 0.125, 0.164 against the
# similarity's 5-reference 0.100, 0.237, 0.215.
MIN_REFERENCES = 1
# Most negatives used in a fit (drawn evenly): a fit stays a fraction of a second.
MAX_NEGATIVES = 2000
# Measured on held-out writers (5 references, EER): C = 10 gave 0.081 on the Dutch set against
# 0.094 with C = 1, and the same on CEDAR.
C = 10.0


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


def writer_model_fit(*, references: np.ndarray, negatives: np.ndarray) -> WriterClassifier:
    """An RBF SVM separating ``references`` (this signer) from ``negatives`` (other people)."""
    from sklearn.svm import SVC  # scikit-learn loads only where a model is trained

    if len(references) < 1 or len(negatives) < 1:
        raise ValueError("a writer model needs references and negatives")
    negatives = negatives_choose(np.asarray(negatives, dtype=np.float64))
    features = np.vstack([np.asarray(references, dtype=np.float64), negatives])
    labels = np.r_[np.ones(len(references)), np.zeros(len(negatives))]
    classifier = SVC(C=C, kernel="rbf", gamma="scale", class_weight="balanced").fit(features, labels)
    return WriterClassifier(support=classifier.support_vectors_.copy(), coefficients=classifier.dual_coef_[0].copy(),
                       intercept=float(classifier.intercept_[0]), gamma=float(classifier._gamma))  # fmt: skip
