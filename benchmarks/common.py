"""Shared set-up for the benchmarks: Django on a throwaway database, real images, timers."""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def django_setup() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simsite.settings")
    # DEBUG off: Django would otherwise keep every query in memory.
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "benchmark-only-" + "x" * 40)
    os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client's host, in-memory email


@contextmanager
def throwaway_database() -> Iterator[None]:
    """A freshly migrated database (like the test runner's), dropped afterwards."""
    from django.test.utils import setup_databases, teardown_databases

    config = setup_databases(verbosity=0, interactive=False)
    try:
        yield
    finally:
        teardown_databases(config, verbosity=0)


@contextmanager
def temporary_media(folder: Path) -> Iterator[None]:
    from django.test import override_settings

    folder.mkdir(parents=True, exist_ok=True)
    with override_settings(MEDIA_ROOT=folder):
        yield


def corpus_source() -> str:
    photos = sorted((SHARED_DATA / "vehicles").rglob("*.jpg"))
    if photos:
        return f"{len(photos)} real vehicle photos (../shared/data) and resized variants of them"
    return "generated pictures (../shared/data is absent)"


def real_images(count: int) -> Iterator[bytes]:
    """``count`` distinct JPEGs, one at a time: the vehicle photos, then resized variants
    of them; generated pictures only where ../shared/data is absent."""
    from PIL import Image

    photos = sorted((SHARED_DATA / "vehicles").rglob("*.jpg"))
    if not photos:
        from tests.images import jpeg_bytes

        for i in range(count):
            yield jpeg_bytes(320, 240, seed=i)
        return
    made = 0
    variant = 0
    while made < count:
        for path in photos:
            if made >= count:
                return
            made += 1
            if variant == 0:
                yield path.read_bytes()
                continue
            image = Image.open(path).convert("RGB")
            scale = 1 - 0.07 * variant
            image = image.resize((max(32, int(image.width * scale)), max(32, int(image.height * scale))))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90 - variant)
            yield buffer.getvalue()
        variant += 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


@contextmanager
def timer(results: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    results[name] = time.perf_counter() - started
