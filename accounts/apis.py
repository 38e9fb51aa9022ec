"""The audit log's API (API.md, "Audit")."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import needs
from accounts.models import AuditEntry
from accounts.selectors import audit_list
from simsite.drf import OutputSerializer, PageNumberPagination, paginated_response


class AuditEntryOutput(OutputSerializer):
    user = serializers.CharField(source="username", help_text="username; empty for the command line or the system")

    class Meta:
        model = AuditEntry
        fields = ["id", "at", "user", "action", "target", "detail", "address"]


class AuditListApi(APIView):
    """Who did what, newest first (users with ``accounts.view_auditentry``; superusers)."""

    access = {"GET": needs("accounts.view_auditentry")}
    pagination_class = PageNumberPagination

    class FilterSerializer(serializers.Serializer):
        action = serializers.ChoiceField(choices=AuditEntry.Action.choices, required=False)
        user = serializers.CharField(max_length=150, required=False, help_text="a username")
        since = serializers.DateTimeField(required=False, help_text="ISO 8601; entries at or after it")

    @extend_schema(parameters=[FilterSerializer], responses=AuditEntryOutput(many=True))
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        entries = audit_list(**filters.validated_data)
        return paginated_response(queryset=entries, serializer_class=AuditEntryOutput, request=request, view=self)
