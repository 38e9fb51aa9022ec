"""Index jobs and the index status: start, follow (JSON and server-sent events), cancel (see API.md)."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import ANYONE, needs, readable_areas
from search.items import areas_of
from search.models import Collection, IndexJob
from search.selectors.embedding_models import (
    index_status,
)
from search.selectors.jobs import index_job_failures, index_job_get, index_job_list, index_job_updates
from search.services.indexing import index_job_cancel, index_job_create
from simsite.drf import OutputSerializer, PageNumberPagination, paginated_items, paginated_response
from simsite.replicas import reads_from_replica
from simsite.sse import STREAM_RENDERERS, event_stream_response


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
