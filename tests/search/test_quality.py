"""Near-duplicate retrieval on real photos no one here drew (../shared/data/vehicles)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageEnhance, ImageOps

from search.querying import query_vectors
from search.selectors.neighbours import items_similar_to
from tests.images import SHARED_DATA
from tests.search.helpers import add_gallery_image, index_now

pytestmark = pytest.mark.django_db

COUNT = 100


def _jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


TRANSFORMS = {
    "crop80": lambda im: im.crop((im.width // 10, im.height // 10, im.width * 9 // 10, im.height * 9 // 10)),
    "resize50": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.BILINEAR),
    "jpeg30": None,  # handled in encoding
    "hflip": ImageOps.mirror,
    "rotate10": lambda im: im.rotate(10, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=(255, 255, 255)),
    "brighter30": lambda im: ImageEnhance.Brightness(im).enhance(1.3),
    "darker30": lambda im: ImageEnhance.Brightness(im).enhance(0.7),
}


def test_transformed_copies_find_their_original(api_client, settings):
    settings.API_THROTTLE_RATES = {}  # some twenty batch searches in a row: not what is tested here
    paths = sorted((SHARED_DATA / "vehicles").rglob("*.jpg"))
    if len(paths) < COUNT:
        pytest.skip("../shared/data/vehicles is not present")
    # Spread over the five classes: every 12th photo.
    chosen = paths[:: len(paths) // COUNT][:COUNT]
    originals = {}
    for path in chosen:
        item = add_gallery_image(path.read_bytes(), path.name)
        originals[path.name] = item.pk
    index_now(gallery_ids=list(originals.values()))

    queries: list[tuple[str, str, bytes]] = []
    for path in chosen:
        image = Image.open(path).convert("RGB")
        for name, transform in TRANSFORMS.items():
            data = _jpeg(image, quality=30) if transform is None else _jpeg(transform(image))
            queries.append((path.name, name, data))

    ranks: dict[str, list[int]] = {name: [] for name in TRANSFORMS}
    for start in range(0, len(queries), settings.SEARCH_BATCH_MAX_FILES):
        chunk = queries[start : start + settings.SEARCH_BATCH_MAX_FILES]
        files = [SimpleUploadedFile(f"{i}.jpg", data, "image/jpeg") for i, (_, _, data) in enumerate(chunk)]
        response = api_client.post(
            "/api/v1/search/batch/", {"images": files, "k": 10, "collection": "gallery"}, format="multipart"
        )
        assert response.status_code == 200, response.json()
        for (source, transform, _), result in zip(chunk, response.json()["queries"], strict=True):
            ids = [r["id"] for r in result["results"]]
            ranks[transform].append(ids.index(originals[source]) + 1 if originals[source] in ids else 99)

    # The index's answer against the exact scan, for one transformed query per photo.
    crops = [data for _, transform, data in queries if transform == "crop80"]
    agreement = []
    for vector in query_vectors(model="efficientnet_lite0", images=crops):
        approximate = {m.ref.id for m in items_similar_to(vector=vector, model="efficientnet_lite0", k=10)}
        exact = {m.ref.id for m in items_similar_to(vector=vector, model="efficientnet_lite0", k=10, exact=True)}
        agreement.append(len(approximate & exact) / 10)

    everything = np.array([rank for values in ranks.values() for rank in values])
    per_transform = {name: float(np.mean(np.array(values) == 1)) for name, values in ranks.items()}
    print("recall@1 per transform:", per_transform)
    assert float(np.mean(everything == 1)) >= 0.95, per_transform
    assert float(np.mean(everything <= 5)) >= 0.99
    assert float(np.mean(agreement)) >= 0.98
