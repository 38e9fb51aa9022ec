"""``POST /api/findSignatureSimilarity`` of the earlier signature tool, for its clients.

JSON ``{"image_path1", "image_path2", "threshold"}`` (paths inside SIGNATURE_FILES_ROOT) or
multipart ``image1``/``image2`` (and ``threshold``) -> ``{"result", "similarity"}``. Errors in
that tool's shape: ``{"error": "<text>", "code": "<slug>"}``. ``threshold`` is a cosine
similarity (0..1) or, as some of its clients sent it, a percentage (above 1, up to 100).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.access import ANYONE
from legacy.views import SeedApiView
from signatures.services.compare import signatures_compare
from signatures.services.inputs import signature_files_resolve, signature_from_upload, signature_input
from simsite.errors import ServiceError


def _threshold(value: object) -> float | None:
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ServiceError("invalid_threshold", "threshold must be a number.", field="threshold") from None
    if not 0 <= number <= 100:
        raise ServiceError("invalid_threshold", "threshold must be between 0 and 1 (or a percentage).",
                           field="threshold")  # fmt: skip
    return number / 100 if number > 1 else number


def _inputs(request: Request) -> tuple[object, object, float | None]:
    data = request.data
    if hasattr(data, "get") and (request.FILES.get("image1") or request.FILES.get("image2")):
        files = [request.FILES.get(name) for name in ("image1", "image2")]
        if not all(files):
            raise ServiceError("image_required", "Send both image1 and image2.", field="image1")
        inputs = [signature_from_upload(file=file, field=name) for file, name in zip(files, ("image1", "image2"),
                                                                                      strict=True)]  # fmt: skip
        return inputs[0], inputs[1], _threshold(data.get("threshold"))
    if not isinstance(data, dict) and not hasattr(data, "get"):
        raise ServiceError("invalid_body", "Send a JSON object or a multipart form.")
    paths = [data.get("image_path1"), data.get("image_path2")]
    if not all(isinstance(path, str) and path for path in paths):
        raise ServiceError("image_required", "Send image_path1 and image_path2, or upload image1 and image2.",
                           field="image_path1")  # fmt: skip
    inputs = [
        signature_input(
            data=signature_files_resolve(path=path, field=name), filename=path.rsplit("/", 1)[-1], field=name
        )  # fmt: skip
        for path, name in zip(paths, ("image_path1", "image_path2"), strict=True)
    ]
    return inputs[0], inputs[1], _threshold(data.get("threshold"))


@extend_schema(exclude=True)
class SeedSignatureSimilarityApi(SeedApiView):
    access = {"POST": ANYONE}  # a comparison stores nothing (API.md)
    throttle_scope = "signatures"
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def post(self, request: Request) -> Response:
        first, second, threshold = _inputs(request)
        comparison = signatures_compare(first=first, second=second, threshold=threshold)
        return Response({"result": comparison["result"], "similarity": comparison["similarity"]})
