"""Gallery routes of the earlier Flask tools, kept so their clients work unchanged.

Images are addressed by file name as they were there: uploading a name that exists replaces
that image. Reads follow the gallery's rule (public when ``PUBLIC_READ`` names it); writes
need the API's permissions unless ``SEED_ROUTES_OPEN_WRITES`` is on for a trusted network, as
the old tools assumed.
"""

from __future__ import annotations

from pathlib import PurePath

from django.conf import settings
from django.http import FileResponse, HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.access import read, seed_write
from catalog.models import GalleryImage
from catalog.selectors import gallery_filenames, gallery_image_named
from catalog.services import gallery_image_replace, gallery_images_delete_named, image_from_upload
from catalog.storage import stored_open
from legacy.views import SeedApiView
from search.apis.catalog import thumbnail_response
from simsite.errors import ServiceError


def _image_named(filename: str) -> GalleryImage:
    image = gallery_image_named(filename=filename)
    if image is None:
        raise ServiceError("not_found", f"No image named '{filename}'.", status_code=404)
    return image


@extend_schema(exclude=True)
class SeedImageListApi(SeedApiView):
    access = {"GET": read("gallery")}

    def get(self, request: Request) -> Response:
        return Response({"images": gallery_filenames()})


@extend_schema(exclude=True)
class SeedImageUploadApi(SeedApiView):
    throttle_scope = "upload"
    parser_classes = [MultiPartParser]
    access = {"POST": seed_write("catalog.add_galleryimage")}
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
    access = {"DELETE": seed_write("catalog.delete_galleryimage")}
    answers_success = True

    def delete(self, request: Request, filename: str) -> Response:
        image = _image_named(filename)
        gallery_images_delete_named(filename=image.original_filename)
        return Response({"success": True, "filename": image.original_filename})


@extend_schema(exclude=True)
class SeedImageFileApi(SeedApiView):
    access = {"GET": read("gallery")}

    def get(self, request: Request, filename: str) -> HttpResponse:
        image = _image_named(filename)
        response = FileResponse(stored_open(name=image.file.name))
        response["Cache-Control"] = f"{'public' if 'gallery' in settings.PUBLIC_READ else 'private'}, max-age=3600"
        return response


@extend_schema(exclude=True)
class SeedThumbnailApi(SeedApiView):
    access = {"GET": read("gallery")}

    def get(self, request: Request, filename: str) -> HttpResponse:
        image = _image_named(filename)
        return thumbnail_response(request, image.file.name, image.sha256, area="gallery")
