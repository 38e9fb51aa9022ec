"""Search by image, item or batch, with filters, in JSON or CSV (see API.md)."""

from __future__ import annotations

import csv
import io
import time

from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import ANYONE, require_areas
from catalog.services import image_from_source, image_from_upload
from search.apis.catalog import GalleryImageOutput, ProductOutput
from search.items import GALLERY_IMAGE, PRODUCT, ItemRef, areas_of
from search.models import Collection
from search.querying import item_vector, query_decode_side, query_vectors
from search.selectors.embedding_models import (
    active_model_key,
    model_spec_get,
)
from search.selectors.neighbours import Match, items_similar_to
from search.services.tuning import search_queries_record
from simsite.errors import ServiceError
from simsite.replicas import reads_from_replica

# How each kind of item is written in results.
ITEM_OUTPUTS = {PRODUCT.name: ProductOutput, GALLERY_IMAGE.name: GalleryImageOutput}


def results_payload(matches: list[Match], request: Request) -> list[dict[str, object]]:
    """Matches with their items' fields (``Match.item``, with its ``embedded`` flag: from
    ``items_similar_to(with_items=True)`` or ``items_by_ref``), in match order."""
    context = {"request": request}
    # One serializer per kind (many=True): DRF builds a serializer's fields once, which per
    # item cost more than the search itself (profiled: 2 ms an item).
    rows: dict[ItemRef, dict] = {}
    for kind, output in ITEM_OUTPUTS.items():
        of_kind = [match for match in matches if match.ref.kind == kind]
        if not of_kind:
            continue
        data = output([match.item for match in of_kind], many=True, context=context).data
        rows.update(zip((match.ref for match in of_kind), data, strict=True))
    return [{"type": match.ref.kind, "similarity": match.similarity, **rows[match.ref]} for match in matches]


def form_data(request: Request, *, lists: tuple[str, ...]) -> dict[str, object]:
    """Request data as a plain dict; the named fields keep all their values (multipart)."""
    if hasattr(request.data, "getlist"):
        data: dict[str, object] = request.data.dict()
        for name in lists:
            if name in request.data:
                data[name] = request.data.getlist(name)
        return data
    if not isinstance(request.data, dict):
        raise ServiceError("invalid_body", f"The body must be a JSON object or a form, not a JSON "
                           f"{type(request.data).__name__}.")  # fmt: skip
    return dict(request.data)


class SearchOptions(serializers.Serializer):
    collection = serializers.ChoiceField(choices=Collection.choices, default=Collection.ALL)
    k = serializers.IntegerField(default=6, min_value=1, max_value=100)
    threshold = serializers.FloatField(default=0.0, min_value=-1.0, max_value=1.0)
    category = serializers.ListField(child=serializers.CharField(max_length=100), required=False, default=list)
    min_price = serializers.DecimalField(max_digits=12, decimal_places=2, required=False)
    max_price = serializers.DecimalField(max_digits=12, decimal_places=2, required=False)
    model = serializers.CharField(required=False)
    exact = serializers.BooleanField(default=False)

    def validate(self, attrs: dict) -> dict:
        attrs["model"] = model_spec_get(attrs.get("model") or active_model_key(recent=True)).key
        return attrs


SEARCH_REFUSALS = {
    401: "A collection searched (or the item searched from) is not public here and no login was sent; "
    "search a public collection, or log in.",
    403: "The user may not read a collection searched, or the item searched from.",
}


def _require_collections(request: Request, data: dict[str, object]) -> None:
    """Refuse a search of a collection the visitor may not read before anything else is looked at
    (an unknown collection is left to the input's validation)."""
    collection = data.get("collection") or Collection.ALL
    require_areas(request.user, areas_of(collection) if isinstance(collection, str) else set())


def search_matches(options: dict, vector: object, exclude: ItemRef | None = None) -> list[Match]:
    """The matches of a search request, each with its item (``results_payload`` writes them)."""
    return items_similar_to(
        vector=vector,
        model=options["model"],
        collection=options["collection"],
        k=options["k"],
        threshold=options["threshold"],
        categories=options["category"],
        min_price=options.get("min_price"),
        max_price=options.get("max_price"),
        exclude=exclude,
        exact=options["exact"],
        with_items=True,
    )


_CSV_COLUMNS = ["query", "rank", "type", "id", "similarity", "sku", "name", "category", "price", "filename",
                "image_url", "thumbnail_url"]  # fmt: skip


def _csv_cell(value: object) -> object:
    """Neutralise text a spreadsheet would run as a formula (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


class SearchCsvRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: object, accepted_media_type: str | None = None, renderer_context: dict | None = None):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        if isinstance(data, dict) and "error" in data:
            writer.writerow(["code", "message", "field"])
            writer.writerow([_csv_cell(data["error"].get(key)) for key in ("code", "message", "field")])
            return buffer.getvalue().encode()
        queries = data.get("queries") if isinstance(data, dict) else None
        if queries is None:
            queries = [{"filename": "", "results": (data or {}).get("results", [])}]
        writer.writerow(_CSV_COLUMNS)
        for query in queries:
            for rank, result in enumerate(query["results"], start=1):
                row = {**result, "query": query.get("filename", ""), "rank": rank}
                writer.writerow([_csv_cell(row.get(column)) for column in _CSV_COLUMNS])
        return buffer.getvalue().encode()


class SearchApi(APIView):
    """A read, though it is a POST (it carries an image): open to everyone who may read the
    collections searched (``PUBLIC_READ``; a collection that is not public is refused, never
    left out quietly). ``?format=csv`` returns the rows as CSV."""

    access = {"POST": ANYONE}  # then each collection's own rule (require_areas)
    throttle_scope = "search"
    error_statuses = {
        **SEARCH_REFUSALS,
        404: "The product or gallery image to search from does not exist.",
        409: "The item to search from has no vector and its image file is missing.",
        503: "The model's weights are missing on this server, or its CUDA device is gone.",
    }

    parser_classes = [MultiPartParser, FormParser, JSONParser]
    renderer_classes = [JSONRenderer, SearchCsvRenderer]

    class InputSerializer(SearchOptions):
        image = serializers.FileField(required=False)
        image_url = serializers.URLField(required=False, max_length=2048)
        product = serializers.IntegerField(required=False, min_value=1)
        gallery_image = serializers.IntegerField(required=False, min_value=1)

        def validate(self, attrs: dict) -> dict:
            sources = [name for name in ("image", "image_url", "product", "gallery_image") if attrs.get(name)]
            if len(sources) != 1:
                raise serializers.ValidationError(
                    "Send exactly one query: image, image_url, product or gallery_image.", code="query_required"
                )
            return super().validate(attrs)

    @reads_from_replica
    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer(
            "SearchResults",
            {
                "model": serializers.CharField(),
                "took_ms": serializers.FloatField(),
                "results": serializers.ListField(child=serializers.DictField()),
            },
        ),
    )
    def post(self, request: Request) -> Response:
        started = time.perf_counter()
        data = form_data(request, lists=("category",))
        _require_collections(request, data)
        params = self.InputSerializer(data=data)
        params.is_valid(raise_exception=True)
        options = params.validated_data
        item = next((ItemRef(kind, options[kind]) for kind in ITEM_OUTPUTS if options.get(kind)), None)
        if item is not None:
            require_areas(request.user, {item.item_kind.area})
        if item is not None:
            vector = item_vector(model=options["model"], ref=item)
        else:
            side = query_decode_side(model=options["model"])
            image = image_from_source(file=options.get("image"), url=options.get("image_url"), decode_min_side=side)
            vector = query_vectors(model=options["model"], images=[image])[0]
            search_queries_record(model=options["model"], vectors=[vector])
        results = results_payload(search_matches(options, vector, exclude=item), request)
        took_ms = round((time.perf_counter() - started) * 1000, 1)
        return Response({"model": options["model"], "took_ms": took_ms, "results": results})


class SearchBatchApi(APIView):
    """Several query images at once, embedded as one batch."""

    access = {"POST": ANYONE}  # then each collection's own rule (require_areas)
    throttle_scope = "search_batch"
    error_statuses = {
        **SEARCH_REFUSALS,
        503: "The model's weights are missing on this server, or its CUDA device is gone.",
    }

    parser_classes = [MultiPartParser]
    renderer_classes = [JSONRenderer, SearchCsvRenderer]

    class InputSerializer(SearchOptions):
        images = serializers.ListField(child=serializers.FileField(), allow_empty=False,
                                       max_length=settings.SEARCH_BATCH_MAX_FILES)  # fmt: skip

    @reads_from_replica
    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer(
            "BatchSearchResults",
            {
                "model": serializers.CharField(),
                "took_ms": serializers.FloatField(),
                "queries": serializers.ListField(child=serializers.DictField()),
            },
        ),
    )
    def post(self, request: Request) -> Response:
        started = time.perf_counter()
        data = form_data(request, lists=("category", "images"))
        _require_collections(request, data)
        params = self.InputSerializer(data=data)
        params.is_valid(raise_exception=True)
        options = params.validated_data
        side = query_decode_side(model=options["model"])
        images = [image_from_upload(file=file, field="images", decode_min_side=side) for file in options["images"]]
        vectors = query_vectors(model=options["model"], images=images)
        search_queries_record(model=options["model"], vectors=vectors)
        queries = [
            {
                "filename": file.name,
                "results": results_payload(search_matches(options, vector), request),
            }
            for file, vector in zip(options["images"], vectors, strict=True)
        ]
        took_ms = round((time.perf_counter() - started) * 1000, 1)
        return Response({"model": options["model"], "took_ms": took_ms, "queries": queries})
