"""Image bytes to vectors, as an indexing worker does it, without the database: the CPU path
(decode and resize on CPU threads, forward on the model's device) against the GPU path (nvJPEG
batch decoding, resize and normalisation on the GPU, fp16 channels_last forward), in one run.

    make bench-decode                                   # CPU here; CUDA where there is one
    python benchmarks/decode.py --images DIR --n 8192 --batch 256 --threads 16

Prints images/s end to end for each path (bytes in memory -> unit vectors in host memory),
the time per stage of the GPU path (JPEG header check, decode + resize, forward, copy back),
the GPU's utilisation while it runs, and how closely GPU vectors agree with CPU vectors for
the same photos (cosine), including the fallbacks (CMYK, EXIF-rotated, PNG, garbage).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATA


def settings_only() -> None:
    """The project's settings without its apps or services: only the model code runs here
    (so that a bare GPU machine needs Django, not the whole stack)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("DATABASE_URL", "postgres://unused@localhost/unused")  # never connected to
    os.environ.setdefault("SECRET_KEY", "benchmark-only-" + "x" * 40)
    import importlib

    from django.conf import settings

    project = importlib.import_module("simsite.settings")
    values = {name: getattr(project, name) for name in dir(project) if name.isupper()}
    settings.configure(**{**values, "INSTALLED_APPS": [], "DEBUG": False})


def photos_from(folder: Path, limit: int) -> list[bytes]:
    paths = sorted(folder.rglob("*.jpg"))[:limit]
    if paths:
        return [path.read_bytes() for path in paths]
    from tests.images import jpeg_bytes

    return [jpeg_bytes(640, 480, seed=i) for i in range(min(limit, 64))]


class Utilisation:
    """Samples the GPU's utilisation (NVML) in a thread."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import torch

        while not self._stop.wait(0.05):
            try:
                self.samples.append(torch.cuda.utilization())
            except Exception:  # noqa: BLE001 - no NVML: nothing to report
                return

    def __enter__(self) -> Utilisation:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=SHARED_DATA / "vehicles")
    parser.add_argument("--n", type=int, default=512, help="images per CUDA run (the corpus is cycled)")
    parser.add_argument("--cpu-n", type=int, default=256, help="images for the all-CPU run")
    parser.add_argument("--batch", type=int, default=None, help="images per worker batch (default: per device)")
    parser.add_argument("--threads", type=int, default=None, help="CPU decode threads (default: the setting)")
    args = parser.parse_args()
    settings_only()

    import torch
    from django.conf import settings

    from search import embedders
    from tests import images

    corpus = photos_from(args.images, 2000)
    threads = args.threads or settings.EMBEDDING_DECODE_THREADS
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    source = "../shared/data" if args.images == SHARED_DATA / "vehicles" else args.images
    print(f"{len(corpus)} photos ({source}), {args.n} per run, {threads} decode threads; "
          f"devices: {', '.join(devices)}; torch {torch.__version__}")  # fmt: skip
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")

    def run(embedder: embedders.Embedder, batch: int, gpu_decoding: bool) -> tuple[float, list[int]]:
        count = args.n if embedder.device.type == "cuda" else args.cpu_n
        stream = [corpus[i % len(corpus)] for i in range(count)]
        embedder.embed_encoded(stream[:batch], threads=threads, gpu_decoding=gpu_decoding)  # warm-up (cuDNN, nvJPEG)
        if embedder.device.type == "cuda":
            torch.cuda.synchronize()
        with Utilisation() as gpu:
            started = time.perf_counter()
            for i in range(0, len(stream), batch):
                embedder.embed_encoded(stream[i : i + batch], threads=threads, gpu_decoding=gpu_decoding)
            elapsed = time.perf_counter() - started
        return len(stream) / elapsed, gpu.samples

    rows = []
    vectors = {}
    check = corpus[:64] + [images.cmyk_jpeg(), images.exif_rotated_jpeg(), images.png_bytes(320, 240, seed=3)]
    for device in devices:
        settings.EMBEDDING_DEVICE = device
        embedders.get_embedder.cache_clear()
        embedder = embedders.get_embedder("efficientnet_lite0")
        batch = args.batch or (256 if device == "cuda" else 32)
        rate, samples = run(embedder, batch, gpu_decoding=False)
        label = "CPU decode, forward on " + device.upper()
        rows.append((label, batch, rate, samples))
        if device == "cuda":
            rate_gpu, samples_gpu = run(embedder, batch, gpu_decoding=True)
            rows.append(("GPU decode (nvJPEG), forward on CUDA", batch, rate_gpu, samples_gpu))
            stages(embedder, [corpus[i % len(corpus)] for i in range(batch)])
        vectors[device] = embedder.embed_encoded(check, threads=threads)
    embedders.get_embedder.cache_clear()

    print()
    print("path | batch | images/s | GPU busy (mean of samples)")
    print("--- | --- | --- | ---")
    for label, batch, rate, samples in rows:
        busy = f"{statistics.mean(samples):.0f}%" if samples else "-"
        print(f"{label} | {batch} | {rate:,.0f} | {busy}")
    if len(rows) > 2:
        print(f"GPU decoding against CPU decoding, same GPU forward: {rows[2][2] / rows[1][2]:.2f}x")
    if "cuda" in vectors:
        cosines = [float(a @ b) for a, b in zip(vectors["cpu"], vectors["cuda"], strict=True)]
        print(f"GPU vs CPU vectors, {len(cosines)} images (64 photos, CMYK, EXIF-rotated, PNG): cosine min "
              f"{min(cosines):.4f}, mean {statistics.mean(cosines):.4f}")  # fmt: skip
    return 0


def stages(embedder: object, batch: list[bytes]) -> None:
    """Where the GPU path's time goes, one batch, each stage synchronised."""
    import torch

    from search import embedders

    def timed(function: object, repeat: int = 5) -> tuple[float, object]:
        times, result = [], None
        for _ in range(repeat):
            torch.cuda.synchronize()
            started = time.perf_counter()
            result = function()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        return statistics.median(times), result

    header, _ = timed(lambda: [embedders._plain_jpeg(data) for data in batch])
    decode, tensors = timed(lambda: embedder._decode_cuda(batch))
    stacked = torch.stack(tensors)
    network = embedder.network

    def forward() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            return network(stacked.to(memory_format=torch.channels_last))

    compute, features = timed(forward)
    copy, _ = timed(lambda: torch.nn.functional.normalize(features.float(), dim=1).cpu().numpy())
    total = header + decode + compute + copy
    print(f"GPU path, one batch of {len(batch)}: " + ", ".join(
        f"{name} {seconds * 1000:.1f} ms ({seconds / total:.0%})"
        for name, seconds in (("header check", header), ("decode+resize", decode), ("forward", compute),
                              ("copy back", copy))
    ) + f"; {len(batch) / total:,.0f} images/s if the stages ran back to back")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
