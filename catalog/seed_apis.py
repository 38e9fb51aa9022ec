"""Gallery routes of the earlier Flask tools, kept so their clients work unchanged.

Images are addressed by file name as they were there: uploading a name that exists replaces
that image. Reads are public; writes follow the API's rule (staff) unless
``SEED_ROUTES_OPEN_WRITES`` is on for a trusted network, as the old tools assumed.
"""

from __future__ import annotations

from pathlib import PurePath

from django.conf import settings
from django.http import FileResponse, HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from catalog.apis import thumbnail_response
from catalog.models import GalleryImage
from catalog.selectors import gallery_filenames, gallery_image_named
from catalog.services import gallery_image_replace, gallery_images_delete_named, image_from_upload
from catalog.storage import stored_open
from simsite.drf import IsStaffOrReadOnly
from simsite.errors import ServiceError
from simsite.seed import SeedApiView


class SeedWritePermission(BasePermission):
    def has_permission(self, request: Request, view: object) -> bool:
        return settings.SEED_ROUTES_OPEN_WRITES or IsStaffOrReadOnly().has_permission(request, view)


def _image_named(filename: str) -> GalleryImage:
    image = gallery_image_named(filename=filename)
    if image is None:
        raise ServiceError("not_found", f"No image named '{filename}'.", status_code=404)
    return image


@extend_schema(exclude=True)
class SeedImageListApi(SeedApiView):
    def get(self, request: Request) -> Response:
        return Response({"images": gallery_filenames()})


@extend_schema(exclude=True)
class SeedImageUploadApi(SeedApiView):
    throttle_scope = "upload"
    parser_classes = [MultiPartParser]
    permission_classes = [SeedWritePermission]
    answers_success = True

    def post(self, request: Request) -> Response:
        file = request.FILES.get("file")
        if file is None:
            raise ServiceError("file_required", "Send the image as 'file'.", field="file")
        image = image_from_upload(file=file, field="file")
        name = PurePath(file.name or f"{image.sha256}.{image.extension}").name
        gallery_image_replace(image=image, filename=name)
        return Response({"success": True, "filename": name})


@extend_schema(exclude=True)
class SeedImageDeleteApi(SeedApiView):
    permission_classes = [SeedWritePermission]
    answers_success = True

    def delete(self, request: Request, filename: str) -> Response:
        image = _image_named(filename)
        gallery_images_delete_named(filename=image.original_filename)
        return Response({"success": True, "filename": image.original_filename})


@extend_schema(exclude=True)
class SeedImageFileApi(SeedApiView):
    permission_classes = [AllowAny]

    def get(self, request: Request, filename: str) -> HttpResponse:
        image = _image_named(filename)
        response = FileResponse(stored_open(name=image.file.name))
        response["Cache-Control"] = "public, max-age=3600"
        return response


@extend_schema(exclude=True)
class SeedThumbnailApi(SeedApiView):
    permission_classes = [AllowAny]

    def get(self, request: Request, filename: str) -> HttpResponse:
        image = _image_named(filename)
        return thumbnail_response(request, image.file.name, image.sha256)
