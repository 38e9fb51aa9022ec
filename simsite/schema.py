"""OpenAPI: nested ``InputSerializer`` classes named after their API, and every error status an
operation can answer documented with the error body (clients and fuzzers read the schema as
the truth).

The statuses come from what the project's plumbing does to every request - authentication,
the access rule of the operation (``accounts.access``), content negotiation, parsing and its
size bounds, throttles (``simsite.drf``, ``simsite.uploads``) - and from what a view declares
it refuses on its own (``error_statuses``: ``{status: description}``, or by method
``{"POST": {...}}``).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema as BaseAutoSchema
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

from accounts.access import rule_for

ERROR_BODY = inline_serializer(
    "ErrorBody",
    {
        "error": inline_serializer(
            "Error",
            {
                "code": serializers.CharField(help_text="stable, machine-readable: e.g. not_found, file_too_large"),
                "message": serializers.CharField(help_text="what went wrong and how to fix it"),
                "field": serializers.CharField(allow_null=True, help_text="the input at fault, if one is"),
            },
        )
    },
)

_COMMON = {
    "400": "Bad request: invalid parameters or body (the error names the field), or a Host this server does not serve.",
    "401": "Credentials were sent and are wrong (or the token is unknown).",
    "406": "The Accept header asks for a representation this operation does not have.",
    "503": "The database is not answering for the moment (database_unavailable); try again after Retry-After.",
}
_RESTRICTED = {
    "401": "Not logged in, and the operation is not open to anonymous visitors (PUBLIC_READ for reads of the "
    "catalog and gallery); or credentials were sent and are wrong.",
    "403": "The user lacks the permission this operation needs (the message names it), or a session write came "
    "without its CSRF token.",
}
_SESSION_WRITE = {"403": "A session write came without its CSRF token."}
_BODY = {
    "413": "The request body, or a file in it, is over the size limit.",
    "415": "The body's Content-Type is not one this operation parses.",
}


class AutoSchema(BaseAutoSchema):
    def get_serializer_name(self, serializer: Any, direction: str) -> str:
        qualname = type(serializer).__qualname__
        if "." not in qualname:
            return super().get_serializer_name(serializer, direction)
        # "GalleryDeleteApi.InputSerializer" -> "GalleryDeleteInput"
        outer, inner = qualname.rsplit(".", 1)
        return outer.removesuffix("Api") + inner.removesuffix("Serializer")

    def _error_statuses(self) -> dict[str, str]:
        view, method = self.view, self.method
        statuses = dict(_COMMON)
        if not rule_for(view, method).anyone:
            statuses.update(_RESTRICTED)
        elif method not in ("GET", "HEAD", "OPTIONS") and getattr(view, "authentication_classes", None):
            statuses.update(_SESSION_WRITE)
        if method in ("POST", "PUT", "PATCH"):
            statuses.update(_BODY)
        if "{" in self.path:
            statuses["404"] = "No such object."
        if method == "GET" and getattr(view, "pagination_class", None) is not None:
            statuses["404"] = "No such page."
        scope = getattr(view, "throttle_scope", None)
        if isinstance(scope, dict):
            scope = scope.get(method)
        if scope:
            statuses["429"] = f"Too many requests from this client (scope '{scope}'); see Retry-After."
        declared = getattr(view, "error_statuses", {})
        if method in declared:
            declared = declared[method]
        for code, text in declared.items():
            if str(code).isdigit():
                # An operation's own 503 comes on top of the database's.
                statuses[str(code)] = f"{text} Or: {statuses[str(code)]}" if str(code) == "503" else text
        return statuses

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        for status, description in sorted(self._error_statuses().items()):
            if status not in responses:
                response = self._get_response_for_code(ERROR_BODY, status, ["application/json"], direction)
                response["description"] = description
                responses[status] = response
        return responses
