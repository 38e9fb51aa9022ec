"""Training a writer-independent signature encoder (torch; used by the training command and task).

The network: ImageNet EfficientNet-Lite0 on the preprocessed signature, its first blocks
frozen, the later blocks fine-tuned, a linear projection to ``dim`` and L2 normalisation;
cosine similarity compares two signatures. The loss: batch-hard triplet with a soft margin
over writer-balanced batches, where a writer's genuine signatures are the positives and
everything else - other writers' signatures and, above all, this writer's skilled
forgeries - the negatives (README, "Signatures"). Augmentation fit for signatures: small
rotation, shear and scale, stroke width and elastic warps. The frozen trunk runs once per
augmented copy (cached), so an epoch costs only the trained blocks.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2

from search.embedders import embedding_device
from signatures.encoders import SignatureNet, Tap, network_embed, network_load
from signatures.evaluation import protocol_report
from signatures.preprocessing import DETAIL_SHAPE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 12
    dim: int = 112  # the feature block's channels: the projection starts as the identity
    feature_blocks: int = 11  # EfficientNet-Lite0's first 11 of 16 blocks (stride 16, 112 channels)
    frozen_blocks: int = 8  # blocks 8-10 and the projection are trained
    # Descriptors for the signers' own models (``signatures.encoders.Tap``): after 8 blocks (the
    # frozen trunk) in three vertical strips, after 11 over a 2 x 3 grid, after 14 whole.
    taps: tuple[Tap, ...] = (Tap(8, 1, 3), Tap(11, 2, 3), Tap(14))
    # The signatures at 1.5 times the pretrained encoders' size (``signatures.preprocessing``).
    input_shape: tuple[int, int] = DETAIL_SHAPE
    writers_per_batch: int = 8
    genuine_per_writer: int = 4
    forged_per_writer: int = 2
    augmented_copies: int = 4
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    seed: int = 0
    loss: str = "triplet"  # "triplet" (batch-hard, soft margin) or "contrastive"
    # A time budget for the whole run (caching included): the learning rate follows the budget
    # as well as the epochs, whichever runs out first, and training ends when it is spent.
    minutes: float | None = None


@dataclass
class TrainingResult:
    state: dict[str, torch.Tensor]
    config: TrainingConfig
    curves: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    seconds: float = 0.0


def augmenter(seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """One signature (H, W), ink high -> a plausible other signing of it."""
    generator = torch.Generator().manual_seed(seed)
    affine = v2.RandomAffine(degrees=4, translate=(0.04, 0.04), scale=(0.9, 1.05), shear=(-10, 10, -3, 3))
    elastic = v2.ElasticTransform(alpha=12.0, sigma=4.0)

    def chance(p: float) -> bool:
        return bool(torch.rand((), generator=generator) < p)

    def augment(array: torch.Tensor) -> torch.Tensor:
        x = array.unsqueeze(0)
        x = affine(x)
        if chance(0.4):
            x = elastic(x)
        if chance(0.35):  # a broader pen
            x = nn.functional.max_pool2d(x.unsqueeze(0), 3, stride=1, padding=1).squeeze(0)
        elif chance(0.2):  # a finer one, never erasing a stroke
            x = torch.minimum(x, nn.functional.avg_pool2d(x.unsqueeze(0), 3, stride=1, padding=1).squeeze(0) * 1.5)
        return x.squeeze(0).clamp(0, 1)

    return augment


@torch.no_grad()
def _trunk_maps(net: SignatureNet, arrays: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    net.eval()
    device = next(net.parameters()).device
    return torch.cat([net.trunk(arrays[i : i + chunk].to(device)).cpu() for i in range(0, len(arrays), chunk)])


def _triplet_loss(vectors: torch.Tensor, writers: torch.Tensor, genuine: torch.Tensor) -> torch.Tensor:
    """Batch-hard triplet with a soft margin, anchored on genuine signatures."""
    similarity = vectors @ vectors.T
    same = (writers[:, None] == writers[None, :]) & genuine[None, :]
    eye = torch.eye(len(vectors), dtype=torch.bool, device=vectors.device)
    positive = same & ~eye
    anchors = genuine & positive.any(dim=1)
    hardest_positive = similarity.masked_fill(~positive, 2.0).min(dim=1).values
    hardest_negative = similarity.masked_fill(same, -2.0).max(dim=1).values
    return nn.functional.softplus(10.0 * (hardest_negative - hardest_positive))[anchors].mean()


def _contrastive_loss(vectors: torch.Tensor, writers: torch.Tensor, genuine: torch.Tensor) -> torch.Tensor:
    """Every pair: same writer's genuine pairs pulled to 1, the rest pushed below a margin."""
    similarity = vectors @ vectors.T
    same = (writers[:, None] == writers[None, :]) & genuine[None, :] & genuine[:, None]
    eye = torch.eye(len(vectors), dtype=torch.bool, device=vectors.device)
    pairs = ~eye & (genuine[:, None] | genuine[None, :])
    pull = (1 - similarity).pow(2)
    push = (similarity - 0.3).clamp(min=0).pow(2)
    return torch.where(same, pull, push)[pairs].mean()


LOSSES = {"triplet": _triplet_loss, "contrastive": _contrastive_loss}


def train(
    arrays: np.ndarray,
    writers: Sequence[str],
    labels: Sequence[str],
    *,
    validation: tuple[np.ndarray, Sequence[str], Sequence[str]] | None,
    config: TrainingConfig,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainingResult:
    """Train on the given signatures; keep the epoch with the lowest skilled-forgery EER on the
    validation writers (the last epoch when there is no validation set)."""
    started = time.monotonic()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = embedding_device()
    net = SignatureNet(dim=config.dim, frozen_blocks=config.frozen_blocks, feature_blocks=config.feature_blocks,
                       taps=config.taps, input_shape=config.input_shape)  # fmt: skip
    for parameter in net.frozen_parameters():
        parameter.requires_grad_(False)
    net.to(device)

    # The frozen trunk's maps of every signature and of its augmented copies, computed once.
    base = torch.from_numpy(np.asarray(arrays, dtype=np.float32))
    augment = augmenter(config.seed)
    cached = []
    for copy in range(config.augmented_copies + 1):
        signatures = base if copy == 0 else torch.stack([augment(a) for a in base])
        cached.append(_trunk_maps(net, signatures))
        if progress is not None:
            progress(0, {"prepared": (copy + 1) / (config.augmented_copies + 1)})
    maps = torch.stack(cached)  # (copies, N, C, h, w)
    del cached
    logger.info("trunk maps cached in %.0f s", time.monotonic() - started)

    writer_names = sorted(set(writers))
    writer_index = torch.tensor([writer_names.index(w) for w in writers])
    is_genuine = torch.tensor([label == "genuine" for label in labels])
    by_writer = {
        w: (np.flatnonzero((writer_index == w).numpy() & is_genuine.numpy()),
            np.flatnonzero((writer_index == w).numpy() & ~is_genuine.numpy()))
        for w in range(len(writer_names))
    }  # fmt: skip
    eligible = [w for w, (genuine, _) in by_writer.items() if len(genuine) >= 2]
    per_batch = min(config.writers_per_batch, len(eligible))
    batch_genuine = config.genuine_per_writer
    steps = max(1, math.ceil(int(is_genuine.sum()) / max(per_batch * batch_genuine, 1)))

    trained = [p for p in net.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trained, lr=config.learning_rate, weight_decay=config.weight_decay)
    deadline = started + config.minutes * 60 if config.minutes else None
    loop_started = time.monotonic()

    def progress_made(step: int) -> float:
        """How far through training: by steps, or by the time budget when that runs out first."""
        done = step / (config.epochs * steps)
        if deadline is not None:
            done = max(done, (time.monotonic() - loop_started) / max(deadline - loop_started, 1e-3))
        return min(done, 1.0)

    def learning_rate_factor(step: int) -> float:  # warm-up, then cosine decay to zero
        done = progress_made(step)
        return max(done / 0.15, 0.04) if done < 0.15 else 0.5 * (1 + math.cos(math.pi * (done - 0.15) / 0.85))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, learning_rate_factor)
    step = 0
    loss_fn = LOSSES[config.loss]
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")  # fp16 autocast on CUDA
    curves: dict[str, list[float]] = {"loss": [], "val_eer": [], "val_auc": []}
    best = (math.inf, 0, None)
    if validation is not None:
        # Epoch 0, the ImageNet features: kept unless training does better on new writers.
        val_eer, val_auc = validation_eer(net, *validation)
        curves["val_eer"].append(val_eer)
        curves["val_auc"].append(val_auc)
        best = (val_eer, 0, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
        logger.info("epoch 0 (untrained): val_eer %.4f, val_auc %.4f", val_eer, val_auc)
    for epoch in range(1, config.epochs + 1):
        if epoch > 1 and deadline is not None and progress_made(step) >= 1.0:
            logger.info("time budget of %.0f minutes spent after %d epochs", config.minutes, epoch - 1)
            break
        net.train()
        losses = []
        for _ in range(steps):
            step += 1
            chosen = []
            for w in rng.choice(eligible, size=per_batch, replace=False):
                genuine, forged = by_writer[int(w)]
                chosen += rng.choice(genuine, size=min(batch_genuine, len(genuine)), replace=False).tolist()
                if len(forged):
                    chosen += rng.choice(
                        forged, size=min(config.forged_per_writer, len(forged)), replace=False
                    ).tolist()
            index = torch.tensor(chosen)
            copy = torch.from_numpy(rng.integers(0, len(maps), size=len(index)))
            batch = maps[copy, index].to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                vectors = net.tail(batch, descriptor=False).float()
            loss = loss_fn(vectors, writer_index[index].to(device), is_genuine[index].to(device))
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            schedule.step()
            losses.append(float(loss.detach()))
        curves["loss"].append(float(np.mean(losses)))
        measured = {"loss": curves["loss"][-1]}
        if validation is not None:
            val_eer, val_auc = validation_eer(net, *validation)
            curves["val_eer"].append(val_eer)
            curves["val_auc"].append(val_auc)
            measured |= {"val_eer": val_eer, "val_auc": val_auc}
            score = val_eer
        else:
            score = -epoch
        if score < best[0]:
            best = (score, epoch, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
        logger.info("epoch %d: %s", epoch, measured)
        if progress is not None:
            progress(epoch, measured)
    return TrainingResult(
        state=best[2], config=config, curves=curves, best_epoch=best[1], seconds=time.monotonic() - started
    )


def _saved(result: TrainingResult) -> dict[str, object]:
    config = result.config
    return {"state": result.state, "dim": config.dim, "frozen_blocks": config.frozen_blocks,
            "feature_blocks": config.feature_blocks, "taps": [list(tap) for tap in config.taps],
            "input_shape": list(config.input_shape)}  # fmt: skip


def trained_network(result: TrainingResult) -> SignatureNet:
    return network_load(_saved(result))


def weights_file(result: TrainingResult) -> bytes:
    """What ``signatures.encoders.network_load`` loads."""
    buffer = io.BytesIO()
    torch.save(_saved(result), buffer)
    return buffer.getvalue()


def calibrate(
    vectors: np.ndarray, writers: Sequence[str], labels: Sequence[str], thresholds: dict[str, float]
) -> tuple[dict, dict]:
    """The validation writers' metrics (three seeded draws pooled) with 1, 3 and 5 references
    at ``thresholds`` (per reference count: the calibration's equal-error points, the ones
    verify decides with; a count without its own takes the nearest below), from their vectors'
    similarity part. Returns (results, scores)."""
    if "1" not in thresholds:
        raise ValueError("the validation writers need at least two genuine signatures each")
    return protocol_report(vectors, writers, labels, threshold=lambda count: threshold_for_count(thresholds, count),
                           counts=[1, 3, 5], aggregate="max", seeds=(0, 1, 2))  # fmt: skip


def threshold_for_count(thresholds: dict[str, float], references: int) -> float:
    """The threshold measured with the most references not above ``references``."""
    return thresholds[str(max(int(count) for count in thresholds if int(count) <= references))]


def validation_eer(
    net: SignatureNet, arrays: np.ndarray, writers: Sequence[str], labels: Sequence[str]
) -> tuple[float, float]:
    """Skilled-forgery EER and AUC with one reference (three seeded draws pooled)."""
    vectors = network_embed(net, arrays)[:, : net.projection.out_features]  # the similarity part
    measured, _ = protocol_report(vectors, writers, labels, counts=[1], aggregate="max", threshold=0.0,
                                  seeds=(0, 1, 2))  # fmt: skip
    entry = measured["1_references"]
    kind = entry["skilled" if "skilled" in entry else "random"]
    return kind["eer"], kind["auc"]
