"""Embedding models: the list, activation, and the models trained here (see API.md)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import needs
from accounts.models import AuditEntry
from accounts.services import audit_record
from search.models import TrainedModel
from search.registry import TRAINABLE_BASES
from search.selectors.embedding_models import (
    embedding_model_list,
    trained_model_get,
    trained_model_list,
    trained_model_source,
)
from search.services.activation import active_model_set
from search.services.trained_models import model_training_start, trained_model_delete
from simsite.drf import OutputSerializer, PageNumberPagination, paginated_items
from simsite.errors import ServiceError
from simsite.replicas import reads_from_replica


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
