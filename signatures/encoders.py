"""Preprocessed signatures in, L2-normalised vectors out (the signatures app's torch module)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from search.embedders import get_embedder
from search.registry import model_spec
from signatures.registry import EncoderSpec


class PretrainedEncoder:
    """An ImageNet backbone on the preprocessed signature, drawn dark on light as the
    backbone's photographs are, grey replicated to three channels."""

    def __init__(self, spec: EncoderSpec):
        self.spec = spec
        self.backbone = get_embedder(spec.backbone)
        backbone = model_spec(spec.backbone)
        self.size = backbone.input_size
        self.mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(backbone.std).view(1, 3, 1, 1)

    def embed(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        if not arrays:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        batch = 1.0 - torch.from_numpy(np.stack(arrays)).unsqueeze(1)
        batch = torch.nn.functional.interpolate(batch, size=(self.size, self.size), mode="bilinear", antialias=True)
        batch = (batch.expand(-1, 3, -1, -1) - self.mean) / self.std
        return self.backbone.embed_tensors(batch)


@functools.cache
def get_encoder(key: str) -> PretrainedEncoder:
    """The encoder for ``key``, loaded once per process."""
    from signatures.registry import pretrained_spec

    return PretrainedEncoder(pretrained_spec(key))
