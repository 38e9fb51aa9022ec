"""Fine-tuning an embedding model on labelled images (torch; used by the training service).

A pretrained base model becomes a classifier of the user's classes (``FineTunedNet``): its
early layers stay at their ImageNet weights, its last stage is fine-tuned, and a new hidden
layer (linear + batch norm) feeds a cosine classifier trained with label-smoothed cross
entropy (normalised softmax). The hidden layer, L2-normalised, is the embedding search uses:
with a cosine classifier, training pulls each class together in exactly the cosine geometry
that the HNSW index ranks by, which a plain linear head does not (README, "Models trained
here"). Augmentation: random resized crops, flips and colour changes. The frozen trunk runs
once per augmented copy (cached), so an epoch costs only the fine-tuned layers. AdamW, a
one-cycle cosine schedule, early stopping on the validation split's mAP@10.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from django.conf import settings
from torch import nn
from torchvision.transforms import v2

from catalog.images import image_open_rgb
from search.embedders import Embedder, FineTunedNet, embedding_device, fine_tuned_load
from search.evaluation import retrieval_metrics
from search.registry import ModelSpec, decode_side, model_spec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingConfig:
    base: str = "efficientnet_lite0"
    epochs: int = 12  # at most: training stops when validation mAP@10 stops improving
    dim: int = 256  # the hidden layer: the embedding's dimension
    augmented_copies: int = 4
    batch_size: int = 32
    learning_rate: float = 3e-4  # the fine-tuned stage of the base model
    head_learning_rate: float = 3e-3  # the new hidden layer and classifier
    weight_decay: float = 1e-4
    temperature: float = 0.05
    label_smoothing: float = 0.1
    patience: int = 3
    seed: int = 0
    # 0: chosen from the data (``input_size_for``): the base model's 224 for photos, 112 for
    # thumbnails such as Fashion-MNIST's 28x28 (a quarter of the work, nothing lost).
    input_size: int = 0


@dataclass
class TrainingResult:
    state: dict[str, torch.Tensor]
    config: TrainingConfig
    classes: list[str]
    curves: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0


Progress = Callable[[str, float, dict[str, float]], None]


SMALL_SOURCE = 64  # images whose longer side is at most this are thumbnails, not photos
SMALL_INPUT = 112


def input_size_for(datas: Sequence[Callable[[], bytes]], base_size: int, sample: int = 50) -> int:
    """The network's input side for these images: the base model's, unless the images are
    thumbnails (median longer side <= SMALL_SOURCE), which gain nothing from being blown up
    to it."""
    from PIL import Image

    def longer_side(read: Callable[[], bytes]) -> int | None:
        try:
            with Image.open(io.BytesIO(read())) as image:
                return max(image.size)
        except Exception:  # noqa: BLE001 - unreadable ones are counted when they are decoded
            return None

    sides = [side for read in list(datas)[:: max(1, len(datas) // sample)][:sample]
             if (side := longer_side(read)) is not None]  # fmt: skip
    return SMALL_INPUT if sides and float(np.median(sides)) <= SMALL_SOURCE else base_size


def _augmenter(size: int, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    torch.manual_seed(seed)
    # Photos: crops down to a third (a product is recognised from a part of it); thumbnails
    # (a garment filling 28x28) lose their shape below three quarters.
    smallest = 0.75 if size <= SMALL_INPUT else 0.35
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(smallest, 1.0), ratio=(0.75, 1.333), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03)], p=0.8),
            v2.RandomGrayscale(p=0.05),
        ]
    )


def _decode(data: bytes, size: int) -> torch.Tensor | None:
    """Bytes -> uint8 CHW, decoded as the embedder decodes (None if unreadable)."""
    try:
        return v2.functional.pil_to_tensor(image_open_rgb(data, min_side=decode_side(size)))
    except Exception:  # noqa: BLE001 - an unreadable file is skipped and counted
        return None


@torch.no_grad()
def _trunk_maps(net: FineTunedNet, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    # Small passes on CPU are faster per image (cache-bound; see Embedder.embed_tensors).
    chunk = settings.EMBEDDING_CUDA_FORWARD_BATCH if device.type == "cuda" else settings.EMBEDDING_CPU_FORWARD_BATCH
    maps = []
    for start in range(0, len(images), chunk):
        batch = images[start : start + chunk].to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            maps.append(net.trunk(batch).half().cpu())
    return torch.cat(maps)


def prepare(
    net: FineTunedNet, datas: Sequence[Callable[[], bytes]], spec: ModelSpec, *, copies: int, seed: int,
    device: torch.device, progress: Callable[[float], None] | None = None, chunk: int = 64,
) -> tuple[torch.Tensor, list[int]]:  # fmt: skip
    """The trunk's maps of each image (copy 0: the embedder's own preprocessing) and of
    ``copies`` augmented copies, in fp16: (copies + 1, N, C, h, w); and the indices of the
    images that could not be read."""
    size = spec.input_size
    plain = v2.Resize((size, size), antialias=True)
    augment = _augmenter(size, seed)
    normalise = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(spec.mean), list(spec.std))])
    net.trunk.eval()
    parts: list[list[torch.Tensor]] = [[] for _ in range(copies + 1)]
    unreadable = []
    for start in range(0, len(datas), chunk):
        images = []
        for offset, read in enumerate(datas[start : start + chunk]):
            image = _decode(read(), size)
            if image is None:
                unreadable.append(start + offset)
            else:
                images.append(image)
        if images:
            for copy in range(copies + 1):
                batch = torch.stack([normalise(plain(image) if copy == 0 else augment(image)) for image in images])
                parts[copy].append(_trunk_maps(net, batch, device))
        if progress is not None:
            progress(min(1.0, (start + chunk) / len(datas)))
    return torch.stack([torch.cat(part) for part in parts]), unreadable


@torch.no_grad()
def _embed_maps(net: FineTunedNet, maps: torch.Tensor, device: torch.device, chunk: int = 128) -> torch.Tensor:
    net.eval()
    out = []
    for start in range(0, len(maps), chunk):
        batch = maps[start : start + chunk].to(device).float()
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            out.append(net.embed_maps(batch).float().cpu())
    return torch.cat(out)


def train(
    train_data: Sequence[Callable[[], bytes]], train_labels: Sequence[str],
    val_data: Sequence[Callable[[], bytes]], val_labels: Sequence[str],
    *, config: TrainingConfig, progress: Progress | None = None,
) -> TrainingResult:  # fmt: skip
    """Fine-tune ``config.base`` on the training images; keep the epoch with the best mAP@10
    on the validation images, stopping after ``patience`` epochs without improvement."""
    started = time.monotonic()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = embedding_device()
    classes = sorted(set(train_labels))
    net = FineTunedNet(base=config.base, dim=config.dim, classes=len(classes)).to(device)
    for parameter in net.trunk.parameters():
        parameter.requires_grad_(False)
    base = model_spec(config.base)
    if not config.input_size:
        config = replace(config, input_size=input_size_for(train_data, base.input_size))
    spec = replace(base, input_size=config.input_size)

    def report(stage: str, fraction: float, **measured: float) -> None:
        if progress is not None:
            progress(stage, fraction, measured)

    maps, unreadable = prepare(net, train_data, spec, copies=config.augmented_copies, seed=config.seed,
                               device=device, progress=lambda f: report("prepare", 0.8 * f))  # fmt: skip
    kept = [i for i in range(len(train_data)) if i not in set(unreadable)]
    targets = torch.tensor([classes.index(train_labels[i]) for i in kept])
    val_maps, val_unreadable = prepare(net, val_data, spec, copies=0, seed=config.seed, device=device,
                                       progress=lambda f: report("prepare", 0.8 + 0.2 * f))  # fmt: skip
    val_kept = [val_labels[i] for i in range(len(val_data)) if i not in set(val_unreadable)]
    val_maps = val_maps[0]
    if len(kept) < 2 or len(val_kept) < 2:
        raise ValueError("too few readable images to train on")
    prepared_at = time.monotonic()
    logger.info("trunk maps of %d images x %d cached in %.0f s", len(kept), len(maps), prepared_at - started)

    steps = max(1, math.ceil(len(kept) / config.batch_size))
    tail = [p for p in net.tail.parameters() if p.requires_grad]
    head = [*net.hidden.parameters(), net.classifier]
    optimiser = torch.optim.AdamW([{"params": tail, "lr": config.learning_rate},
                                   {"params": head, "lr": config.head_learning_rate}],
                                  weight_decay=config.weight_decay)  # fmt: skip
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=[config.learning_rate, config.head_learning_rate], total_steps=config.epochs * steps,
        pct_start=0.1,
    )  # fmt: skip
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    curves: dict[str, list[float]] = {"loss": [], "train_accuracy": [], "val_accuracy": [], "val_map@10": [],
                                      "val_precision@10": []}  # fmt: skip
    val_targets = torch.tensor([classes.index(label) if label in classes else -1 for label in val_kept])
    best: tuple[float, int, dict[str, torch.Tensor] | None] = (-1.0, 0, None)
    trained_images = 0
    for epoch in range(1, config.epochs + 1):
        net.train()
        net.trunk.eval()
        order = torch.from_numpy(rng.permutation(len(kept)))
        copy = torch.from_numpy(rng.integers(0, len(maps), size=len(kept)))
        losses, correct = [], 0
        for step in range(steps):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            if len(index) < 2:  # batch norm needs two
                continue
            batch = maps[copy[index], index].to(device).float()
            target = targets[index].to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                logits = net.logits(net.embed_maps(batch).float(), config.temperature)
            loss = loss_fn(logits.float(), target)
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            schedule.step()
            losses.append(float(loss.detach()))
            correct += int((logits.argmax(1) == target).sum())
            trained_images += len(index)
        embeddings = _embed_maps(net, val_maps, device)
        val_logits = net.logits(embeddings.to(device), config.temperature).cpu()
        vectors = nn.functional.normalize(embeddings, dim=1).numpy()
        retrieval = retrieval_metrics(vectors, val_kept)["overall"]
        measured = {
            "loss": float(np.mean(losses)) if losses else 0.0,
            "train_accuracy": correct / len(kept),
            "val_accuracy": float((val_logits.argmax(1) == val_targets).float().mean()),
            "val_map@10": retrieval["map@10"],
            "val_precision@10": retrieval["precision@10"],
        }
        for name, value in measured.items():
            curves[name].append(round(value, 4))
        logger.info("epoch %d: %s", epoch, measured)
        report("epoch", epoch / config.epochs, epoch=epoch, **measured)
        if measured["val_map@10"] > best[0]:
            best = (measured["val_map@10"], epoch, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
        elif epoch - best[1] >= config.patience:
            logger.info("stopping early: no better validation mAP@10 since epoch %d", best[1])
            break
    return TrainingResult(
        state=best[2], config=config, classes=classes, curves=curves, best_epoch=best[1],
        seconds=time.monotonic() - started,
        images_per_second=trained_images / max(time.monotonic() - prepared_at, 1e-9),
    )  # fmt: skip


def weights_file(result: TrainingResult) -> bytes:
    """What ``search.embedders.fine_tuned_load`` reads back: the weights and how to rebuild
    the network."""
    buffer = io.BytesIO()
    torch.save({"base": result.config.base, "dim": result.config.dim, "classes": result.classes,
                "config": asdict(result.config), "state": result.state}, buffer)  # fmt: skip
    return buffer.getvalue()


def trained_embedder(result: TrainingResult, spec: ModelSpec) -> Embedder:
    """The trained network behind the search code's own ``Embedder`` (its preprocessing)."""
    saved = torch.load(io.BytesIO(weights_file(result)), map_location="cpu", weights_only=True)
    return Embedder(spec, fine_tuned_load(saved), embedding_device())


@torch.no_grad()
def confusion_matrix(
    embedder: Embedder, vectors: np.ndarray, labels: Sequence[str], classes: Sequence[str]
) -> np.ndarray:
    """The trained classifier's confusion matrix (rows: truth) from the embeddings already
    computed: its logits are cosines to each class direction (the temperature only scales
    them), so no second pass through the network is needed."""
    network: FineTunedNet = embedder.network
    directions = nn.functional.normalize(network.classifier.detach().float().cpu(), dim=1).numpy()
    predicted = (np.asarray(vectors, dtype=np.float32) @ directions.T).argmax(axis=1)
    matrix = np.zeros((len(classes), len(classes)), dtype=int)
    for label, guess in zip(labels, predicted, strict=True):
        matrix[list(classes).index(label), guess] += 1
    return matrix
