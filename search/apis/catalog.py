"""The catalog's REST endpoints: products, categories, CSV imports and the gallery (see API.md).

They live in the search app, not in catalog/, because what they answer is the catalog seen by
search: every product and gallery image carries its vector state (``embedded``, with the active
model) and a gallery upload answers with the index job embedding it. The catalog itself knows
nothing of search (the ``catalog`` contract in .importlinter); its routes keep the ``catalog``
URL namespace (search/catalog_urls.py).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponse, HttpResponseNotModified
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import needs, read
from accounts.models import AuditEntry
from accounts.services import audit_record
from catalog.csv_import import product_import_cancel, product_import_create
from catalog.models import GalleryImage, Product, ProductImport
from catalog.selectors import (
    category_list,
    gallery_image_get,
    gallery_image_list,
    gallery_images_by_id,
    product_get,
    product_import_failures,
    product_import_get,
    product_import_updates,
    product_list,
    products_by_id,
)
from catalog.services import (
    gallery_images_delete,
    gallery_images_upload,
    image_from_source,
    product_create,
    product_delete,
    product_update,
)
from catalog.storage import thumbnail_get
from search.selectors.embeddings import gallery_with_embedded_flag, products_with_embedded_flag
from search.selectors.jobs import index_job_for_items
from simsite.drf import OutputSerializer, PageNumberPagination, error_body, paginated_items, paginated_response
from simsite.errors import ServiceError
from simsite.replicas import reads_from_replica
from simsite.sse import STREAM_RENDERERS, event_stream_response

MULTIPART = [MultiPartParser, FormParser, JSONParser]


def _absolute(request: Request, url: str) -> str:
    return request.build_absolute_uri(url)


class ProductOutput(OutputSerializer):
    image_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    embedded = serializers.BooleanField(read_only=True, default=False)

    class Meta:
        model = Product
        fields = [
            "id", "sku", "name", "category", "price", "image_url", "thumbnail_url", "source_url",
            "embedded", "width", "height", "created_at", "updated_at",
        ]  # fmt: skip

    def get_image_url(self, obj: Product) -> str:
        return _absolute(self.context["request"], obj.image.url)

    def get_thumbnail_url(self, obj: Product) -> str:
        return _absolute(self.context["request"], reverse("catalog:product-thumbnail", args=[obj.pk]))


class GalleryImageOutput(OutputSerializer):
    filename = serializers.CharField(source="original_filename")
    image_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    embedded = serializers.BooleanField(read_only=True, default=False)

    class Meta:
        model = GalleryImage
        fields = ["id", "filename", "width", "height", "image_url", "thumbnail_url", "uploaded_at", "embedded"]

    def get_image_url(self, obj: GalleryImage) -> str:
        return _absolute(self.context["request"], obj.file.url)

    def get_thumbnail_url(self, obj: GalleryImage) -> str:
        return _absolute(self.context["request"], reverse("catalog:gallery-thumbnail", args=[obj.pk]))


def _product(pk: int) -> Product:
    """One product with its ``embedded`` flag (404 if there is none)."""
    return products_with_embedded_flag(products_by_id(ids=[pk])).get()


def _gallery_image(pk: int) -> GalleryImage:
    return gallery_with_embedded_flag(gallery_images_by_id(ids=[pk])).get()


class ProductListApi(APIView):
    access = {"GET": read("catalog"), "POST": needs("catalog.add_product")}
    pagination_class = PageNumberPagination
    throttle_scope = {"POST": "upload"}
    error_statuses = {"POST": {409: "A product with this sku exists already."}}
    parser_classes = MULTIPART

    class FilterSerializer(serializers.Serializer):
        category = serializers.ListField(child=serializers.CharField(), required=False)
        min_price = serializers.DecimalField(max_digits=12, decimal_places=2, required=False)
        max_price = serializers.DecimalField(max_digits=12, decimal_places=2, required=False)
        q = serializers.CharField(required=False, allow_blank=True)

    class InputSerializer(serializers.Serializer):
        sku = serializers.CharField(max_length=64)
        name = serializers.CharField(max_length=255)
        category = serializers.CharField(max_length=100)
        price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0)
        image = serializers.FileField(required=False)
        image_url = serializers.URLField(required=False, max_length=2048)

    @reads_from_replica
    @extend_schema(parameters=[FilterSerializer], responses=ProductOutput(many=True))
    def get(self, request: Request) -> Response:
        params = {**request.query_params.dict(), "category": request.query_params.getlist("category")}
        filters = self.FilterSerializer(data=params)
        filters.is_valid(raise_exception=True)
        return paginated_response(
            queryset=products_with_embedded_flag(product_list(**filters.validated_data)),
            serializer_class=ProductOutput,
            request=request,
            view=self,
        )

    @extend_schema(request=InputSerializer, responses={201: ProductOutput})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        url = values.pop("image_url", None)
        image = image_from_source(file=values.pop("image", None), url=url)
        product = product_create(**values, image=image, source_url=url or "")
        return Response(ProductOutput(_product(product.pk), context={"request": request}).data, status=201)


class ProductDetailApi(APIView):
    access = {
        "GET": read("catalog"),
        "PATCH": needs("catalog.change_product"),
        "DELETE": needs("catalog.delete_product"),
    }
    error_statuses = {"PATCH": {409: "Another product has this sku."}}
    parser_classes = MULTIPART

    class UpdateSerializer(serializers.Serializer):
        sku = serializers.CharField(max_length=64, required=False)
        name = serializers.CharField(max_length=255, required=False)
        category = serializers.CharField(max_length=100, required=False)
        price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, required=False)
        image = serializers.FileField(required=False)
        image_url = serializers.URLField(required=False, max_length=2048)

    @reads_from_replica
    @extend_schema(responses=ProductOutput)
    def get(self, request: Request, pk: int) -> Response:
        return Response(ProductOutput(_product(pk), context={"request": request}).data)

    @extend_schema(request=UpdateSerializer, responses=ProductOutput)
    def patch(self, request: Request, pk: int) -> Response:
        product = product_get(pk=pk)
        data = self.UpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        file, url = values.pop("image", None), values.pop("image_url", None)
        image = image_from_source(file=file, url=url) if file is not None or url else None
        product_update(product=product, image=image, source_url=(url or "") if image else None, **values)
        return Response(ProductOutput(_product(pk), context={"request": request}).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        product_delete(product=product_get(pk=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProductImportFailureOutput(serializers.Serializer):
    row = serializers.IntegerField(help_text="CSV record number; the header is 1")
    code = serializers.CharField()
    error = serializers.CharField()


class ProductImportOutput(OutputSerializer):
    percent = serializers.FloatField(read_only=True)
    failed_count = serializers.SerializerMethodField()

    class Meta:
        model = ProductImport
        fields = [
            "id", "filename", "state", "total", "done", "created", "updated", "failed_count", "percent",
            "created_at", "started_at", "finished_at", "error",
        ]  # fmt: skip

    def get_failed_count(self, obj: ProductImport) -> int:
        return obj.failures.count()


class ProductImportDetailOutput(ProductImportOutput):
    failed = serializers.SerializerMethodField()

    class Meta(ProductImportOutput.Meta):
        fields = [*ProductImportOutput.Meta.fields, "failed"]

    @extend_schema_field(ProductImportFailureOutput(many=True))
    def get_failed(self, obj: ProductImport) -> list[dict[str, object]]:
        return product_import_failures(product_import=obj, limit=self.context.get("failure_limit"))


class ProductImportApi(APIView):
    """Upload a CSV: checked at once (size, encoding, header), imported in the background."""

    access = {"POST": needs("catalog.add_productimport")}
    throttle_scope = "upload"

    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField()

    @extend_schema(request=InputSerializer, responses={202: ProductImportOutput})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = product_import_create(upload=data.validated_data["file"])
        audit_record(user=request.user, action=AuditEntry.Action.PRODUCT_IMPORT, target=f"import {job.pk}",
                     detail={"filename": job.filename}, request=request)  # fmt: skip
        return Response(ProductImportOutput(job).data, status=202)


class ProductImportDetailApi(APIView):
    access = {"GET": needs("catalog.view_productimport")}

    @extend_schema(responses=ProductImportDetailOutput)
    def get(self, request: Request, pk: int) -> Response:
        return Response(ProductImportDetailOutput(product_import_get(pk=pk)).data)


class ProductImportCancelApi(APIView):
    access = {"POST": needs("catalog.change_productimport")}
    error_statuses = {409: "The import has already finished."}

    @extend_schema(request=None, responses=ProductImportDetailOutput)
    def post(self, request: Request, pk: int) -> Response:
        job = product_import_cancel(job=product_import_get(pk=pk))
        return Response(ProductImportDetailOutput(job).data)


class ProductImportEventsApi(APIView):
    access = {"GET": needs("catalog.view_productimport")}
    error_statuses = {503: "This server has all the progress streams it may hold open; poll the import instead."}
    renderer_classes = STREAM_RENDERERS

    @extend_schema(responses={(200, "text/event-stream"): ProductImportDetailOutput})
    def get(self, request: Request, pk: int) -> HttpResponse:
        product_import_get(pk=pk)
        context = {"failure_limit": 100}
        return event_stream_response(
            product_import_updates(pk), lambda job: ProductImportDetailOutput(job, context=context).data
        )


class CategoryListApi(APIView):
    access = {"GET": read("catalog")}
    pagination_class = PageNumberPagination

    @reads_from_replica
    @extend_schema(
        responses=inline_serializer(
            "Category", {"category": serializers.CharField(), "count": serializers.IntegerField()}, many=True
        )
    )
    def get(self, request: Request) -> Response:
        return paginated_items(items=category_list(), request=request, view=self)


class GalleryListApi(APIView):
    access = {"GET": read("gallery"), "POST": needs("catalog.add_galleryimage")}
    pagination_class = PageNumberPagination
    throttle_scope = {"POST": "upload"}
    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        files = serializers.ListField(child=serializers.FileField(), allow_empty=False)

    @reads_from_replica
    @extend_schema(responses=GalleryImageOutput(many=True))
    def get(self, request: Request) -> Response:
        return paginated_response(
            queryset=gallery_with_embedded_flag(gallery_image_list()),
            serializer_class=GalleryImageOutput,
            request=request,
            view=self,
        )

    @extend_schema(
        request=InputSerializer,
        responses={
            201: inline_serializer(
                "GalleryUpload",
                {
                    "created": GalleryImageOutput(many=True),
                    "rejected": serializers.ListField(
                        child=serializers.DictField(), help_text="per refused file: filename, code, error"
                    ),
                    "job": serializers.IntegerField(allow_null=True, help_text="the index job embedding them"),
                },
            )
        },
    )
    def post(self, request: Request) -> Response:
        files = request.FILES.getlist("files")
        if not files:
            raise ServiceError("files_required", "Send one or more image files in the 'files' field.", field="files")
        created, rejected = gallery_images_upload(files=files)
        if not created:
            first = rejected[0]
            body = error_body(first["code"], f"{first['filename']}: {first['error']}", "files")
            return Response({**body, "created": [], "rejected": rejected}, status=400)
        ids = [image.pk for image in created]
        job = index_job_for_items(kind="gallery_image", ids=ids)
        output = GalleryImageOutput(
            gallery_with_embedded_flag(gallery_images_by_id(ids=ids)).order_by("id"),
            many=True,
            context={"request": request},
        )
        return Response({"created": output.data, "rejected": rejected, "job": job.pk if job else None}, status=201)


class GalleryDetailApi(APIView):
    access = {"GET": read("gallery"), "DELETE": needs("catalog.delete_galleryimage")}

    @extend_schema(responses=GalleryImageOutput)
    def get(self, request: Request, pk: int) -> Response:
        return Response(GalleryImageOutput(_gallery_image(pk), context={"request": request}).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        gallery_image_get(pk=pk)
        gallery_images_delete(ids=[pk])
        return Response(status=status.HTTP_204_NO_CONTENT)


class GalleryDeleteApi(APIView):
    access = {"POST": needs("catalog.delete_galleryimage")}

    class InputSerializer(serializers.Serializer):
        ids = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=10_000)
        all = serializers.BooleanField(required=False, default=False)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if bool(attrs.get("ids")) == bool(attrs.get("all")):
                raise serializers.ValidationError("Send either a non-empty 'ids' list or 'all': true.")
            return attrs

    @extend_schema(
        request=InputSerializer, responses=inline_serializer("Deleted", {"deleted": serializers.IntegerField()})
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ids, everything = data.validated_data.get("ids"), data.validated_data["all"]
        deleted = gallery_images_delete(ids=ids, delete_all=everything)
        audit_record(user=request.user, action=AuditEntry.Action.GALLERY_DELETE,
                     target="the whole gallery" if everything else f"{len(ids)} gallery images",
                     detail={"deleted": deleted, **({"ids": ids[:1000]} if ids else {})}, request=request)  # fmt: skip
        return Response({"deleted": deleted})


def thumbnail_response(request: Request, image_name: str, sha256: str, *, area: str) -> HttpResponse:
    etag = f'"{sha256}-thumb"'
    if request.headers.get("If-None-Match") == etag:
        response: HttpResponse = HttpResponseNotModified()
    else:
        name = thumbnail_get(name=image_name, sha256=sha256)
        response = FileResponse(default_storage.open(name, "rb"), content_type="image/jpeg")
    response["ETag"] = etag
    # A collection that is not public must not be kept by shared caches (proxies, CDNs).
    response["Cache-Control"] = f"{'public' if area in settings.PUBLIC_READ else 'private'}, max-age=86400"
    return response


class ProductThumbnailApi(APIView):
    access = {"GET": read("catalog")}

    @extend_schema(responses={(200, "image/jpeg"): bytes})
    def get(self, request: Request, pk: int) -> HttpResponse:
        product = product_get(pk=pk)
        return thumbnail_response(request, product.image.name, product.sha256, area="catalog")


class GalleryThumbnailApi(APIView):
    access = {"GET": read("gallery")}

    @extend_schema(
        responses={(200, "image/jpeg"): bytes}, parameters=[OpenApiParameter("pk", int, OpenApiParameter.PATH)]
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        image = gallery_image_get(pk=pk)
        return thumbnail_response(request, image.file.name, image.sha256, area="gallery")
