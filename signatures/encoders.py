"""Preprocessed signatures in, L2-normalised vectors out (the signatures app's torch module).

Pretrained: a search model's ImageNet features of the signature (the baseline), or
``SignatureNet`` untrained (mid-level features); and ``SignatureNet`` trained here by
``signatures.training``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from django.core.files.storage import default_storage
from torch import nn

from search.embedders import efficientnet_lite0_network, get_embedder
from search.registry import model_spec
from signatures.preprocessing import INPUT_SHAPE
from signatures.registry import EncoderSpec


class Tap(NamedTuple):
    """A descriptor of ``SignatureNet``: its first ``blocks`` blocks' output over a grid."""

    blocks: int
    rows: int = 1
    columns: int = 1


def tap_parse(tap: Tap | int | Sequence[int]) -> Tap:
    """``Tap(8, 1, 3)``, ``[8, 1, 3]`` (as saved) or ``8`` (the whole signature) -> a ``Tap``."""
    return Tap(tap) if isinstance(tap, int) else Tap(*tap)


class SignatureNet(nn.Module):
    """Preprocessed signatures (N, H, W), ink high in [0, 1] -> (N, dim + taps' channels) descriptors.

    EfficientNet-Lite0's stem and its blocks up to ``feature_blocks`` (the first
    ``frozen_blocks`` kept at their ImageNet weights while training), generalised-mean pooling
    and a linear projection to ``dim``: the *similarity* part, unit length, which cosine
    similarity compares. With ``dim`` equal to the block's channels the projection starts as
    the identity, so that an untrained net gives the pooled ImageNet features themselves.

    ``input_shape``: the size of signature it is given (``signatures.preprocessing``): 150x220,
    or 225x330 for encoders trained here, the same framing with finer strokes.

    ``taps``: further generalised-mean descriptors for the signers' own models, each
    ``Tap(blocks, rows, columns)``: the output of the first ``blocks`` blocks pooled over a grid
    of cells (1 x 1: the whole signature; 1 x 3: its beginning, middle and end), flattened, unit
    length, appended. Where on the signature a stroke is matters against a skilled forgery: on
    held-out writers (5 references, the network before fine-tuning) the writer-dependent EER
    with blocks 8 (1 x 3), 11 (2 x 3) and 14 (1 x 1) was 0.041 on CEDAR, 0.102 on the Dutch
    scans and 0.134 on SVC2004, against 0.052, 0.109 and 0.168 with the three pooled whole
    (README, "Signatures"). A plain number ``n`` is ``Tap(n)`` (encoders saved before grids).
    """

    def __init__(self, *, dim: int, frozen_blocks: int, feature_blocks: int = 11,
                 taps: Sequence[Tap | int | Sequence[int]] = (), input_shape: Sequence[int] = INPUT_SHAPE,
                 pretrained: bool = True):  # fmt: skip
        super().__init__()
        self.input_shape = (int(input_shape[0]), int(input_shape[1]))  # what ``SignatureImage.at`` frames
        network = efficientnet_lite0_network(pretrained=pretrained)
        self.frozen_blocks, self.feature_blocks = frozen_blocks, feature_blocks
        self.taps = tuple(sorted(tap_parse(tap) for tap in taps))
        self.stem = nn.Sequential(network._conv_stem, network._bn0, network._swish)
        self.blocks = nn.ModuleList(network._blocks[: max(feature_blocks, *(tap.blocks for tap in self.taps), 0)])
        channels = self.blocks[feature_blocks - 1]._project_conv.out_channels
        self.projection = nn.Linear(channels, dim, bias=False)
        if dim == channels:
            nn.init.eye_(self.projection.weight)
        self.descriptor_dim = dim + sum(
            self.blocks[tap.blocks - 1]._project_conv.out_channels * tap.rows * tap.columns for tap in self.taps
        )
        spec = model_spec("efficientnet_lite0")
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

    def trunk(self, arrays: torch.Tensor) -> torch.Tensor:
        """The frozen part: dark ink on white, as the ImageNet photos were, in three channels."""
        x = (1.0 - arrays.unsqueeze(1)).expand(-1, 3, -1, -1)
        x = self.stem((x - self.mean) / self.std)
        for block in self.blocks[: self.frozen_blocks]:
            x = block(x)
        return x

    def tail(self, maps: torch.Tensor, *, descriptor: bool = True) -> torch.Tensor:
        """The trunk's maps -> the similarity part, then (``descriptor``) the taps' parts."""
        parts = {}
        taps = self.taps if descriptor else ()
        last = max([self.feature_blocks, *(tap.blocks for tap in taps)])
        for index in range(self.frozen_blocks, last + 1):
            for tap in taps:
                if tap.blocks == index:
                    parts[tap] = nn.functional.normalize(gem(maps, grid=(tap.rows, tap.columns)).float(), dim=1)
            if index == self.feature_blocks:
                similar = nn.functional.normalize(self.projection(gem(maps).float()), dim=1)
            if index < last:
                maps = self.blocks[index](maps)
        return torch.cat([similar, *(parts[tap] for tap in taps)], dim=1) if descriptor else similar

    def forward(self, arrays: torch.Tensor) -> torch.Tensor:
        return self.tail(self.trunk(arrays))

    def frozen_parameters(self) -> list[nn.Parameter]:
        """The blocks before ``frozen_blocks`` and those after ``feature_blocks`` (the taps')."""
        frozen = [*self.blocks[: self.frozen_blocks], *self.blocks[self.feature_blocks :]]
        return [*self.stem.parameters(), *(p for block in frozen for p in block.parameters())]


def gem(maps: torch.Tensor, p: float = 3.0, grid: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """Generalised-mean pooling, over the whole map or each cell of a ``grid`` (rows, columns;
    flattened channel-major): thin strokes are a small part of a feature map, and an average
    would wash them out (SVC2004, one reference: EER 0.289 against 0.375)."""
    if grid == (1, 1):
        return maps.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1 / p)
    return nn.functional.adaptive_avg_pool2d(maps.clamp(min=1e-6).pow(p), grid).pow(1 / p).flatten(1)


@torch.no_grad()
def network_embed(net: SignatureNet, arrays: Sequence[np.ndarray], chunk: int = 16) -> np.ndarray:
    net.eval()
    device = next(net.parameters()).device
    if not len(arrays):
        return np.zeros((0, net.descriptor_dim), dtype=np.float32)
    tensor = torch.from_numpy(np.asarray(arrays, dtype=np.float32))
    return torch.cat([net(tensor[i : i + chunk].to(device)).cpu() for i in range(0, len(tensor), chunk)]).numpy()


class PretrainedEncoder:
    """An ImageNet backbone on the preprocessed signature, drawn dark on light as the
    backbone's photographs are, grey replicated to three channels."""

    input_shape = INPUT_SHAPE

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


class NetworkEncoder:
    """A ``SignatureNet``: untrained, the pretrained mid-level features (``feature_blocks``
    of the spec), or trained here, loaded from its weights file."""

    def __init__(self, spec: EncoderSpec, net: SignatureNet):
        self.spec = spec
        self.net = net.eval()
        self.input_shape = net.input_shape

    def embed(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return network_embed(self.net, list(arrays))


def network_load(saved: dict[str, object]) -> SignatureNet:
    """A trained ``SignatureNet`` from what ``signatures.training.weights_file`` saves."""
    net = SignatureNet(dim=saved["dim"], frozen_blocks=saved["frozen_blocks"], feature_blocks=saved["feature_blocks"],
                       taps=saved.get("taps", ()), input_shape=saved.get("input_shape", INPUT_SHAPE),
                       pretrained=False)  # fmt: skip
    net.load_state_dict(saved["state"])
    return net.eval()


Encoder = PretrainedEncoder | NetworkEncoder
_loaded: dict[tuple[str, str], Encoder] = {}
_lock = threading.Lock()


def _build(spec: EncoderSpec) -> Encoder:
    if spec.kind == "trained":  # on the CPU: one signature at a time is what the API asks for
        with default_storage.open(spec.weights, "rb") as handle:
            return NetworkEncoder(spec, network_load(torch.load(handle, map_location="cpu", weights_only=True)))
    if spec.feature_blocks:
        net = SignatureNet(dim=spec.dim, frozen_blocks=spec.feature_blocks, feature_blocks=spec.feature_blocks)
        return NetworkEncoder(spec, net)
    return PretrainedEncoder(spec)


def get_encoder(spec: EncoderSpec) -> Encoder:
    """The encoder ``spec`` describes (``signatures.selectors.encoder_spec``), loaded once per
    process and kept (a trained encoder's weights never change under its key)."""
    with _lock:
        if (spec.key, spec.weights) not in _loaded:
            _loaded[(spec.key, spec.weights)] = _build(spec)
        return _loaded[(spec.key, spec.weights)]
