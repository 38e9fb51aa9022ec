"""Turning a query (image bytes or a stored item) into a vector of the search model.

Query images are embedded in the web process by default (model cached per process); with
``SEARCH_QUERY_EMBEDDER=worker`` they go to the ``embed`` queue and fall back to the web
process when no worker answers within ``SEARCH_QUERY_TIMEOUT`` seconds.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence

import numpy as np
from django.conf import settings

from catalog.models import GalleryImage, Product
from search.models import Embedding
from simsite.errors import ServiceError

logger = logging.getLogger(__name__)


def embed_locally(*, model: str, images: Sequence[bytes]) -> np.ndarray:
    from search.embedders import get_embedder

    return get_embedder(model).embed_bytes(list(images))


def query_vectors(*, model: str, images: Sequence[bytes]) -> np.ndarray:
    """(N, dim) unit vectors for validated image bytes, embedded as one batch."""
    if settings.SEARCH_QUERY_EMBEDDER == "worker":
        from celery.exceptions import TimeoutError as CeleryTimeout

        from search.tasks import embed_query

        encoded = [base64.b64encode(data).decode("ascii") for data in images]
        try:
            result = embed_query.apply_async(args=[model, encoded], queue="embed")
            return np.asarray(result.get(timeout=settings.SEARCH_QUERY_TIMEOUT), dtype=np.float32)
        except CeleryTimeout:
            logger.warning("no embed worker answered in %ss; embedding the query here", settings.SEARCH_QUERY_TIMEOUT)
        except Exception:  # broker down and the like: the web process can still answer
            logger.exception("query embedding on the worker failed; embedding the query here")
    return embed_locally(model=model, images=images)


def item_vector(*, model: str, kind: str, pk: int) -> np.ndarray:
    """The stored vector of a product or gallery image, embedding its image if it has none."""
    model_class = Product if kind == "product" else GalleryImage
    instance = model_class.objects.filter(pk=pk).first()
    if instance is None:
        raise ServiceError("not_found", f"No {kind.replace('_', ' ')} with id {pk}.", field=kind, status_code=404)
    stored = Embedding.objects.filter(model=model, sha256=instance.sha256, **{kind: instance}).first()
    if stored is not None:
        return np.asarray(stored.vector, dtype=np.float32)
    file = instance.image if isinstance(instance, Product) else instance.file
    try:
        with file.open("rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise ServiceError(
            "image_missing",
            f"The image file of {kind.replace('_', ' ')} {pk} is missing from storage.",
            status_code=409,
        ) from None
    return query_vectors(model=model, images=[data])[0]
