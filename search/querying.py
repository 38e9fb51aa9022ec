"""Turning a query (image bytes or a stored item) into a vector of the search model.

Query images are embedded in the web process by default (model cached per process); with
``SEARCH_QUERY_EMBEDDER=worker`` they go to the ``query`` queue (never behind a reindex on
``embed``) with an expiry, and fall back to the web process when no worker answers within
``SEARCH_QUERY_TIMEOUT`` seconds; an expired query is dropped, never computed later. In the
web process, concurrent queries share forwards (``search.query_batcher``).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence

import numpy as np
from django.conf import settings
from PIL import Image

from catalog.images import IntakeImage
from search.items import ItemRef
from search.models import Embedding
from search.query_batcher import query_batcher
from search.selectors.embedding_models import model_spec_get
from simsite.celery import app as celery_app
from simsite.errors import ServiceError

logger = logging.getLogger(__name__)

QUERY_TASK = "search.tasks.embed_query"


def embed_locally(*, model: str, images: Sequence[bytes]) -> np.ndarray:
    """Vectors for encoded images, computed in this process (with concurrent queries' images)."""
    return _embed_here(model=model, images=images)


def _embed_here(*, model: str, images: Sequence[bytes | Image.Image]) -> np.ndarray:
    """Each request prepares its own images (a file that fails to decode fails its request
    alone), then waits for the process's batched forward (``search.query_batcher``)."""
    from search.embedders import get_embedder

    embedder = get_embedder(model_spec_get(model))
    batcher = query_batcher(embedder)
    with batcher.preparing():
        tensors = [
            embedder.preprocess(image) if isinstance(image, Image.Image) else embedder.preprocess_bytes(image)
            for image in images
        ]
    return batcher.embed(tensors)


def query_decode_side(*, model: str) -> int:
    """The side a query image is decoded at during validation (``IntakeImage.decoded``): the
    one the embedder decodes stored images at, so that queries and the index see the same."""
    return model_spec_get(model).decode_side


def query_vectors(*, model: str, images: Sequence[IntakeImage | bytes]) -> np.ndarray:
    """(N, dim) unit vectors for validated images, embedded as one batch: from their decoded
    pixels when validation kept them (one decode per query), else from their bytes."""
    decoded = [getattr(image, "decoded", None) for image in images]
    if settings.SEARCH_QUERY_EMBEDDER != "worker" and images and all(item is not None for item in decoded):
        return _embed_here(model=model, images=decoded)
    return _query_bytes(model=model, images=[image if isinstance(image, bytes) else image.data for image in images])


def _query_bytes(*, model: str, images: Sequence[bytes]) -> np.ndarray:
    if settings.SEARCH_QUERY_EMBEDDER == "worker":
        from celery.exceptions import TimeoutError as CeleryTimeout

        timeout = settings.SEARCH_QUERY_TIMEOUT
        encoded = [base64.b64encode(data).decode("ascii") for data in images]
        try:
            result = celery_app.send_task(QUERY_TASK, args=[model, encoded], expires=timeout)
            return np.asarray(result.get(timeout=timeout), dtype=np.float32)
        except CeleryTimeout:
            logger.warning("no query worker answered in %ss; embedding the query here", timeout)
        except Exception:  # noqa: BLE001 - broker down and the like: the web process can still answer
            logger.exception("query embedding on the worker failed; embedding the query here")
    return embed_locally(model=model, images=images)


def item_vector(*, model: str, ref: ItemRef) -> np.ndarray:
    """The stored vector of a product or gallery image, embedding its image if it has none."""
    kind = ref.item_kind
    label = kind.name.replace("_", " ")
    instance = kind.model.objects.filter(pk=ref.id).first()
    if instance is None:
        raise ServiceError("not_found", f"No {label} with id {ref.id}.", field=kind.name, status_code=404)
    stored = Embedding.objects.filter(model=model, sha256=instance.sha256, **{kind.name: instance}).first()
    if stored is not None:
        return np.asarray(stored.vector, dtype=np.float32)
    try:
        with kind.file_of(instance).open("rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise ServiceError(
            "image_missing", f"The image file of {label} {ref.id} is missing from storage.", status_code=409
        ) from None
    return query_vectors(model=model, images=[data])[0]
