"""REST endpoints for search, index jobs and embedding models (see API.md)."""

from __future__ import annotations

import csv
import io
import time

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import ANYONE, needs, readable_areas, require_areas
from accounts.models import AuditEntry
from accounts.services import audit_record
from catalog.services import image_from_source, image_from_upload
from search.catalog_apis import GalleryImageOutput, ProductOutput
from search.items import GALLERY_IMAGE, PRODUCT, ItemRef, areas_of
from search.models import Collection, IndexJob, TrainedModel
from search.querying import item_vector, query_decode_side, query_vectors
from search.registry import TRAINABLE_BASES
from search.selectors.duplicates import duplicate_groups
from search.selectors.embedding_models import (
    active_model_key,
    embedding_model_list,
    index_status,
    model_spec_get,
    trained_model_get,
    trained_model_list,
    trained_model_source,
)
from search.selectors.embeddings import embedding_stamp, items_by_ref
from search.selectors.jobs import index_job_failures, index_job_get, index_job_list, index_job_updates
from search.selectors.neighbours import Match, items_similar_to
from search.services.activation import active_model_set
from search.services.duplicates import (
    DUPLICATES_MAX_GROUPS,
    duplicates_dismiss,
    duplicates_keep,
    duplicates_scan_refresh,
)
from search.services.indexing import index_job_cancel, index_job_create
from search.services.trained_models import model_training_start, trained_model_delete
from search.services.tuning import search_queries_record
from simsite.drf import OutputSerializer, PageNumberPagination, paginated_items, paginated_response
from simsite.errors import ServiceError
from simsite.replicas import reads_from_replica
from simsite.sse import STREAM_RENDERERS, event_stream_response

# How each kind of item is written in results.
ITEM_OUTPUTS = {PRODUCT.name: ProductOutput, GALLERY_IMAGE.name: GalleryImageOutput}


class IndexJobOutput(OutputSerializer):
    percent = serializers.FloatField(read_only=True)

    class Meta:
        model = IndexJob
        fields = [
            "id", "collection", "model", "mode", "activate_when_done", "state", "total", "done", "failed", "percent",
            "created_at", "started_at", "finished_at", "error",
        ]  # fmt: skip


def job_payload(job: IndexJob) -> dict[str, object]:
    return {**IndexJobOutput(job).data, "failures": index_job_failures(job=job)}


class IndexJobCreateApi(APIView):
    access = {"GET": needs("search.view_indexjob"), "POST": needs("search.add_indexjob")}
    error_statuses = {"POST": {403: "The user may not index, or asked to activate the model without "
                                    "search.change_activemodel."}}  # fmt: skip
    pagination_class = PageNumberPagination

    class InputSerializer(serializers.Serializer):
        collection = serializers.ChoiceField(choices=Collection.choices, default=Collection.ALL)
        model = serializers.CharField(required=False)
        mode = serializers.ChoiceField(choices=IndexJob.Mode.choices, default=IndexJob.Mode.MISSING)
        activate = serializers.BooleanField(
            default=False, help_text="make the model the active one when the job succeeds (no downtime)"
        )

    @extend_schema(request=InputSerializer, responses={202: IndexJobOutput})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        options = dict(data.validated_data)
        if options["activate"]:  # switching the model searches use is the model managers' call
            needs("search.change_activemodel").check(request.user)
        job = index_job_create(activate_when_done=options.pop("activate"), **options)
        return Response(IndexJobOutput(job).data, status=202)

    @extend_schema(responses=IndexJobOutput(many=True))
    def get(self, request: Request) -> Response:
        return paginated_response(queryset=index_job_list(), serializer_class=IndexJobOutput, request=request,
                                  view=self)  # fmt: skip


class IndexJobDetailApi(APIView):
    access = {"GET": needs("search.view_indexjob")}

    @extend_schema(responses=IndexJobOutput)
    def get(self, request: Request, pk: int) -> Response:
        return Response(job_payload(index_job_get(pk=pk)))


class IndexJobCancelApi(APIView):
    access = {"POST": needs("search.change_indexjob")}
    error_statuses = {409: "The job has already ended."}

    @extend_schema(request=None, responses=IndexJobOutput)
    def post(self, request: Request, pk: int) -> Response:
        return Response(IndexJobOutput(index_job_cancel(job=index_job_get(pk=pk))).data)


class IndexJobEventsApi(APIView):
    access = {"GET": needs("search.view_indexjob")}
    error_statuses = {503: "This server has all the progress streams it may hold open; poll the job instead."}
    renderer_classes = STREAM_RENDERERS

    @extend_schema(responses={(200, "text/event-stream"): str})
    def get(self, request: Request, pk: int) -> StreamingHttpResponse:
        index_job_get(pk=pk)
        return event_stream_response(index_job_updates(pk), lambda job: IndexJobOutput(job).data)


class IndexStatusApi(APIView):
    """How much of each collection is embedded, for the collections the visitor may read (the
    gallery page shows it to its public)."""

    access = {"GET": ANYONE}
    pagination_class = PageNumberPagination

    @reads_from_replica
    @extend_schema(
        responses=inline_serializer(
            "IndexStatus",
            {
                "collection": serializers.CharField(),
                "model": serializers.CharField(),
                "items": serializers.IntegerField(),
                "embedded": serializers.IntegerField(),
                "missing": serializers.IntegerField(),
            },
            many=True,
        )
    )
    def get(self, request: Request) -> Response:
        areas = readable_areas(request.user)
        rows = [row for row in index_status() if areas_of(row["collection"]) <= areas]
        return paginated_items(items=rows, request=request, view=self)


class ModelListApi(APIView):
    access = {"GET": needs("search.view_trainedmodel")}
    pagination_class = PageNumberPagination

    @reads_from_replica
    @extend_schema(
        responses=inline_serializer(
            "EmbeddingModel",
            {
                "key": serializers.CharField(),
                "dim": serializers.IntegerField(),
                "active": serializers.BooleanField(),
                "kind": serializers.ChoiceField(choices=["pretrained", "trained"]),
                "base": serializers.CharField(allow_null=True, help_text="trained: the model it was fine-tuned from"),
                "description": serializers.CharField(),
                "weights": serializers.CharField(),
                "embedded": serializers.IntegerField(),
                "missing": serializers.IntegerField(),
                "metrics": serializers.DictField(help_text="trained: test-split retrieval, its base model's"),
            },
            many=True,
        )
    )
    def get(self, request: Request) -> Response:
        return paginated_items(items=embedding_model_list(), request=request, view=self)


class ModelActivateApi(APIView):
    access = {"POST": needs("search.change_activemodel")}
    error_statuses = {409: "Items lack vectors of this model (activate with force to switch anyway)."}

    class InputSerializer(serializers.Serializer):
        force = serializers.BooleanField(default=False)

    @extend_schema(
        request=InputSerializer, responses=inline_serializer("Activated", {"active": serializers.CharField()})
    )
    def post(self, request: Request, key: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        active = active_model_set(model=key, force=data.validated_data["force"])
        audit_record(user=request.user, action=AuditEntry.Action.MODEL_ACTIVATE, target=f"embedding model {active}",
                     detail={"force": data.validated_data["force"]}, request=request)  # fmt: skip
        return Response({"active": active})


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


class DuplicateListApi(APIView):
    access = {"GET": needs("search.view_duplicatepair")}
    pagination_class = PageNumberPagination
    throttle_scope = "duplicates"
    error_statuses = {
        503: "Finding the duplicates took longer than DUPLICATES_STATEMENT_TIMEOUT_MS, or a large "
        "library's first background scan is not done yet (duplicates_scanning)."
    }

    class FilterSerializer(serializers.Serializer):
        collection = serializers.ChoiceField(choices=Collection.choices, default=Collection.GALLERY)
        threshold = serializers.FloatField(default=0.95, min_value=0.5, max_value=1.0)
        model = serializers.CharField(required=False)

    @reads_from_replica
    @extend_schema(
        parameters=[FilterSerializer],
        responses=inline_serializer(
            "DuplicateGroup",
            {
                "similarity": serializers.FloatField(help_text="the group's weakest joining pair"),
                "size": serializers.IntegerField(help_text="items in the group (items lists at most 50)"),
                "items": serializers.ListField(child=serializers.DictField()),
            },
            many=True,
        ),
    )
    def get(self, request: Request) -> Response:
        params = self.FilterSerializer(data=request.query_params.dict())
        params.is_valid(raise_exception=True)
        options = params.validated_data
        model = model_spec_get(options.get("model") or active_model_key()).key
        stamp = embedding_stamp(model=model)
        duplicates_scan_refresh(model=model, stamp=stamp)  # a large library's duplicates: found in the background
        groups = duplicate_groups(model=model, collection=options["collection"], threshold=options["threshold"],
                                  stamp=stamp)  # fmt: skip
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(groups, request, view=self)
        items = items_by_ref([ref for group in page for ref in group["items"]], model=model)  # one query a page
        payload = []
        for group in page:
            matches = [Match(ref, group["similarity"], items[ref]) for ref in group["items"] if ref in items]
            payload.append({"similarity": group["similarity"], "size": group["size"],
                            "items": results_payload(matches, request)})  # fmt: skip
        return paginator.get_paginated_response(payload)


class ItemRefInput(serializers.Serializer):
    type = serializers.ChoiceField(choices=[PRODUCT.name, GALLERY_IMAGE.name])
    id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)

    def to_internal_value(self, data: object) -> ItemRef:
        checked = super().to_internal_value(data)
        return ItemRef(checked["type"], checked["id"])


class DuplicatesKeepApi(APIView):
    """Resolve duplicate groups: keep one copy of each, delete the others."""

    access = {"POST": needs("search.add_duplicatedismissal", "catalog.delete_product", "catalog.delete_galleryimage")}
    error_statuses = {409: "A copy to keep no longer exists (nothing was deleted)."}

    class InputSerializer(serializers.Serializer):
        class GroupSerializer(serializers.Serializer):
            keep = ItemRefInput()
            delete = serializers.ListField(child=ItemRefInput(), min_length=1, max_length=1000)

        groups = serializers.ListField(child=GroupSerializer(), min_length=1, max_length=DUPLICATES_MAX_GROUPS)

    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer(
            "DuplicatesKept", {"deleted": serializers.IntegerField(help_text="items deleted (gone ones not counted)")}
        ),
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        groups = [(group["keep"], group["delete"]) for group in data.validated_data["groups"]]
        deleted = duplicates_keep(groups=groups)
        audit_record(user=request.user, action=AuditEntry.Action.DUPLICATES_KEEP, target=f"{len(groups)} groups",
                     detail={"deleted": deleted, "groups": [{"keep": str(keep), "delete": [str(ref) for ref in refs]}
                                                            for keep, refs in groups[:100]]},
                     request=request)  # fmt: skip
        return Response({"deleted": deleted})


class DuplicatesDismissApi(APIView):
    """Mark groups as not duplicates: none of their items are grouped together again."""

    access = {"POST": needs("search.add_duplicatedismissal")}

    class InputSerializer(serializers.Serializer):
        groups = serializers.ListField(
            child=serializers.ListField(child=ItemRefInput(), min_length=2, max_length=1000),
            min_length=1, max_length=DUPLICATES_MAX_GROUPS,
        )  # fmt: skip

    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer(
            "DuplicatesDismissed", {"remembered": serializers.IntegerField(help_text="groups remembered")}
        ),
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        remembered = duplicates_dismiss(groups=data.validated_data["groups"], user=request.user)
        audit_record(user=request.user, action=AuditEntry.Action.DUPLICATES_DISMISS,
                     target=f"{len(data.validated_data['groups'])} groups", detail={"remembered": remembered},
                     request=request)  # fmt: skip
        return Response({"remembered": remembered})


class TrainedModelOutput(OutputSerializer):
    source = serializers.SerializerMethodField(help_text="'catalog', or the folder relative to EMBEDDING_TRAINING_ROOT")

    class Meta:
        model = TrainedModel
        fields = [
            "key", "base", "status", "progress", "message", "source", "config", "dim", "classes", "metrics",
            "curves", "seconds", "activate_when_done", "created_at", "finished_at",
        ]  # fmt: skip

    def get_source(self, obj: TrainedModel) -> str:
        return trained_model_source(trained=obj)


class TrainedModelListApi(APIView):
    access = {"GET": needs("search.view_trainedmodel"), "POST": needs("search.add_trainedmodel")}
    pagination_class = PageNumberPagination
    error_statuses = {
        "POST": {
            403: "The folder is outside EMBEDDING_TRAINING_ROOT, or no root is set.",
            404: "No such training folder.",
            409: "A model with this key exists already.",
        }
    }

    class InputSerializer(serializers.Serializer):
        data = serializers.CharField(
            max_length=1024, help_text="'catalog' (products by category) or a folder under EMBEDDING_TRAINING_ROOT"
        )
        base = serializers.ChoiceField(choices=TRAINABLE_BASES, default="efficientnet_lite0")
        epochs = serializers.IntegerField(min_value=1, max_value=200, required=False)
        key = serializers.CharField(max_length=40, required=False)
        dim = serializers.IntegerField(min_value=16, max_value=2048, required=False)
        seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=0)
        activate = serializers.BooleanField(default=False, help_text="index everything with it, then activate it")

    @extend_schema(responses=TrainedModelOutput(many=True))
    def get(self, request: Request) -> Response:
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(trained_model_list(), request, view=self)
        return paginator.get_paginated_response(TrainedModelOutput(page, many=True).data)

    @extend_schema(request=InputSerializer, responses={202: TrainedModelOutput})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        trained = model_training_start(within_root=True, **data.validated_data)
        audit_record(user=request.user, action=AuditEntry.Action.MODEL_TRAIN, target=f"embedding model {trained.key}",
                     detail={"base": trained.base, "source": TrainedModelOutput(trained).data["source"]},
                     request=request)  # fmt: skip
        return Response(TrainedModelOutput(trained).data, status=202)


class TrainedModelDetailApi(APIView):
    access = {"GET": needs("search.view_trainedmodel"), "DELETE": needs("search.delete_trainedmodel")}
    error_statuses = {"DELETE": {409: "The model is active, being trained or being indexed."}}

    @extend_schema(responses=TrainedModelOutput)
    def get(self, request: Request, key: str) -> Response:
        return Response(TrainedModelOutput(_trained_or_404(key)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, key: str) -> Response:
        trained_model_delete(trained=_trained_or_404(key))
        audit_record(user=request.user, action=AuditEntry.Action.MODEL_DELETE, target=f"embedding model {key}",
                     request=request)  # fmt: skip
        return Response(status=204)


def _trained_or_404(key: str) -> TrainedModel:
    try:
        return trained_model_get(key=key)
    except TrainedModel.DoesNotExist:
        raise ServiceError("not_found", f"No trained model '{key[:100]}'.", status_code=404) from None
