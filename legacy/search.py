"""Search routes of the earlier Flask tools, kept so their clients work unchanged."""

from __future__ import annotations

from collections.abc import Iterator

from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.access import read, seed_write
from catalog.services import image_from_upload
from legacy.views import SeedApiView
from search.models import Collection, IndexJob
from search.querying import query_decode_side, query_vectors
from search.selectors.embedding_models import active_model_key, model_coverage
from search.selectors.jobs import index_job_updates
from search.selectors.neighbours import items_similar_to
from search.services.indexing import index_job_create
from search.services.tuning import search_queries_record
from simsite.errors import ServiceError
from simsite.sse import TICK, event_stream_response


@extend_schema(exclude=True)
class SeedSearchApi(SeedApiView):
    """``file`` -> the 6 most similar gallery images."""

    access = {"POST": read("gallery")}
    throttle_scope = "search"

    parser_classes = [MultiPartParser]

    def post(self, request: Request) -> Response:
        file = request.FILES.get("file")
        if file is None:
            raise ServiceError("file_required", "Send the query image as 'file'.", field="file")
        model = active_model_key()
        image = image_from_upload(file=file, field="file", decode_min_side=query_decode_side(model=model))
        gallery = next(row for row in model_coverage(model=model) if row["collection"] == "gallery")
        if not gallery["items"]:
            raise ServiceError("no_images", "The gallery is empty: upload images first.", field="file")
        if not gallery["embedded"]:
            raise ServiceError("no_features", "No image has features yet: generate features first.", field="file")
        vector = query_vectors(model=model, images=[image])[0]
        search_queries_record(model=model, vectors=[vector])
        matches = items_similar_to(vector=vector, model=model, collection=Collection.GALLERY, k=6, with_items=True)
        results = [
            {
                "filename": match.item.original_filename,
                "similarity": match.similarity,
                "image_url": request.build_absolute_uri(f"/images/{match.item.original_filename}"),
            }
            for match in matches
        ]
        return Response({"results": results})


def _feature_events(job_id: int) -> Iterator[object]:
    for job in index_job_updates(job_id):
        if job is TICK:
            yield job
            continue
        yield {"progress": job.percent, "current": job.done + job.failed, "total": job.total}
        if job.state in IndexJob.TERMINAL:
            # As the old tool reported it: how many gallery images now have features.
            coverage = model_coverage(model=job.model)
            count = next(row["embedded"] for row in coverage if row["collection"] == "gallery")
            payload = {"complete": job.state == IndexJob.State.SUCCEEDED, "count": count}
            if job.state != IndexJob.State.SUCCEEDED:
                payload["error"] = job.error or job.state
            yield payload


@extend_schema(exclude=True)
class SeedGenerateFeaturesApi(SeedApiView):
    """Embed the gallery's images that lack vectors, streaming progress as the old tool did."""

    access = {"POST": seed_write("search.add_indexjob")}

    def post(self, request: Request) -> StreamingHttpResponse:
        gallery = next(row for row in model_coverage(model=active_model_key()) if row["collection"] == "gallery")
        if not gallery["items"]:
            raise ServiceError("no_images", "There are no images to generate features for: upload images first.")
        job = index_job_create(collection=Collection.GALLERY)
        return event_stream_response(_feature_events(job.pk))


@extend_schema(exclude=True)
class SeedCheckFeaturesApi(SeedApiView):
    """Whether every gallery image has a vector of the active model (and there is one)."""

    access = {"GET": read("gallery")}

    def get(self, request: Request) -> Response:
        gallery = next(row for row in model_coverage(model=active_model_key()) if row["collection"] == "gallery")
        return Response({"exists": bool(gallery["items"]) and gallery["missing"] == 0})
