"""Indexing throughput: the whole pipeline against the bare model, and the naive baseline.

    make bench-indexing ARGS="--n 2000"           # throughput table
    make bench-indexing ARGS="--memory"           # peak RSS indexing 2,000 vs 10,000 images

Pipeline = what an embed worker does per batch (file -> decode -> preprocess -> model ->
pgvector upsert, search/services/indexing.py:index_batch_run), measured over all N images. Bare
forward = the same model on pre-decoded tensors at the same batch size, in the same run.
Naive baseline = one image at a time, as the earlier Flask tools did. Runs unchanged on CPU
and CUDA (EMBEDDING_DEVICE); prints where the time goes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import corpus_source, django_setup, real_images, temporary_media, throwaway_database


class PeakRss:
    """Samples this process's resident memory in a thread; ``peak`` is the highest seen."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def store_corpus(n: int) -> list[int]:
    from catalog.images import image_validate
    from catalog.services import gallery_image_create

    ids = []
    for i, data in enumerate(real_images(n)):
        image = image_validate(data=data, filename=f"{i}.jpg")
        ids.append(gallery_image_create(image=image, original_filename=f"{i}.jpg").pk)
    return ids


def run_pipeline(ids: list[int]) -> float:
    from search.models import IndexBatch
    from search.services.indexing import index_batch_run, items_index

    job = items_index(gallery_ids=ids)
    batches = list(IndexBatch.objects.filter(job=job).order_by("number").values_list("pk", flat=True))
    started = time.perf_counter()
    for batch_id in batches:
        index_batch_run(batch_id=batch_id)
    elapsed = time.perf_counter() - started
    job.refresh_from_db()
    assert job.state == "succeeded" and job.done == len(ids), (job.state, job.done, job.failed)
    return elapsed


def throughput(args: argparse.Namespace) -> dict[str, object]:
    import numpy as np
    import torch
    from django.conf import settings
    from django.core.files.storage import default_storage

    from catalog.images import image_open_rgb
    from catalog.models import GalleryImage
    from search.embedders import get_embedder
    from search.models import Embedding
    from search.services.indexing import embedding_upsert

    embedder = get_embedder(settings.EMBEDDING_DEFAULT_MODEL)
    batch = settings.EMBEDDING_BATCH_SIZE
    ids = store_corpus(args.n)
    embedder.embed_tensors(torch.zeros(2, 3, 224, 224))  # warm-up: first-pass kernel selection
    with PeakRss() as rss:
        pipeline_s = run_pipeline(ids)

    images = list(GalleryImage.objects.filter(pk__in=ids[: args.sample]).order_by("pk"))
    stage: dict[str, float] = {}
    started = time.perf_counter()
    raw = []
    for image in images:
        with default_storage.open(image.file.name, "rb") as handle:
            raw.append(handle.read())
    stage["read files"] = time.perf_counter() - started
    started = time.perf_counter()
    tensors = [embedder.preprocess_bytes(data) for data in raw]
    stage["decode + preprocess (1 thread)"] = time.perf_counter() - started
    stacked = torch.stack(tensors)
    started = time.perf_counter()
    vectors = np.concatenate([embedder.embed_tensors(chunk) for chunk in torch.split(stacked, batch)])
    stage["model forward"] = bare_s = time.perf_counter() - started
    rows = [
        Embedding(gallery_image=image, model="bench_copy", vector=vector, sha256=image.sha256)
        for image, vector in zip(images, vectors, strict=True)
    ]
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        embedding_upsert(rows=rows[i : i + batch])
    stage["pgvector upsert"] = time.perf_counter() - started

    naive = images[: args.naive]
    started = time.perf_counter()
    for image in naive:
        with open(default_storage.path(image.file.name), "rb") as handle:
            picture = image_open_rgb(handle.read())
        vector = embedder.embed_tensors(embedder.preprocess(picture).unsqueeze(0))[0]
        Embedding.objects.update_or_create(
            gallery_image=image, model="bench_naive", defaults={"vector": vector, "sha256": image.sha256}
        )
    naive_s = time.perf_counter() - started

    pipeline_ips = len(ids) / pipeline_s
    bare_ips = len(images) / bare_s
    naive_ips = len(naive) / naive_s
    return {
        "device": str(embedder.device),
        "model": embedder.key,
        "images": len(ids),
        "batch": batch,
        "pipeline_images_per_s": round(pipeline_ips, 1),
        "bare_forward_images_per_s": round(bare_ips, 1),
        "pipeline_over_bare": round(pipeline_ips / bare_ips, 3),
        "naive_images_per_s": round(naive_ips, 1),
        "speedup_over_naive": round(pipeline_ips / naive_ips, 2),
        "stage_ms_per_image": {name: round(1000 * s / len(images), 2) for name, s in stage.items()},
        "peak_rss_mb": round(rss.peak / 2**20, 1),
    }


def memory(args: argparse.Namespace) -> None:
    """Peak RSS of the pipeline on 2,000 and on 10,000 images, each in a fresh process."""
    peaks = {}
    for n in (2000, 10000):
        result = subprocess.run(
            [sys.executable, __file__, "--n", str(n), "--rss-only"], capture_output=True, text=True, check=True
        )
        peaks[n] = json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        print(f"indexing {n:>6} images: peak RSS {peaks[n]:.0f} MB", flush=True)
    change = (peaks[10000] - peaks[2000]) / peaks[2000]
    print(f"difference: {100 * change:+.1f}% (goal: under 15%)")


def rss_only(args: argparse.Namespace) -> None:
    import torch
    from django.conf import settings

    from search.embedders import get_embedder

    get_embedder(settings.EMBEDDING_DEFAULT_MODEL).embed_tensors(torch.zeros(2, 3, 224, 224))
    ids = store_corpus(args.n)
    with PeakRss() as rss:
        run_pipeline(ids)
    print(json.dumps({"images": args.n, "peak_rss_mb": round(rss.peak / 2**20, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="images to index (default 2000)")
    parser.add_argument("--sample", type=int, default=512, help="images for the bare-forward and stage timings")
    parser.add_argument("--naive", type=int, default=200, help="images for the one-at-a-time baseline")
    parser.add_argument("--memory", action="store_true", help="compare peak RSS at 2,000 and 10,000 images")
    parser.add_argument("--rss-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:
        memory(args)
        return
    django_setup()
    with tempfile.TemporaryDirectory() as media, temporary_media(Path(media)), throwaway_database():
        if args.rss_only:
            rss_only(args)
            return
        print(f"corpus: {corpus_source()}", flush=True)
        result = throughput(args)
    print(json.dumps(result, indent=2))
    print(
        f"\npipeline {result['pipeline_images_per_s']} img/s = {result['pipeline_over_bare']:.2f} x bare forward "
        f"({result['bare_forward_images_per_s']} img/s; goal >= 0.8); "
        f"{result['speedup_over_naive']}x the one-at-a-time baseline ({result['naive_images_per_s']} img/s)"
    )


if __name__ == "__main__":
    main()
