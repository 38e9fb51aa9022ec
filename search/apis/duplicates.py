"""The near-duplicate review: groups, keep and dismiss (see API.md)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import needs
from accounts.models import AuditEntry
from accounts.services import audit_record
from search.apis.queries import results_payload
from search.items import GALLERY_IMAGE, PRODUCT, ItemRef
from search.models import Collection
from search.selectors.duplicates import duplicate_groups
from search.selectors.embedding_models import (
    active_model_key,
    model_spec_get,
)
from search.selectors.embeddings import embedding_stamp, items_by_ref
from search.selectors.neighbours import Match
from search.services.duplicates import (
    DUPLICATES_MAX_GROUPS,
    duplicates_dismiss,
    duplicates_keep,
    duplicates_scan_refresh,
)
from simsite.drf import PageNumberPagination
from simsite.replicas import reads_from_replica


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
