"""The routes of the earlier Flask tools share one rule: their error shape."""

from __future__ import annotations

from typing import Any

from rest_framework.response import Response
from rest_framework.views import APIView


class SeedApiView(APIView):
    """A route of the earlier Flask tools: errors keep their shape, which those clients
    display: ``{"error": "<text>", "code": "<slug>"}``, with ``"success": false`` where the
    old route answered ``success``."""

    answers_success = False

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        error = response.data.get("error") if isinstance(response.data, dict) else None
        if isinstance(error, dict):
            body: dict[str, Any] = {"error": error.get("message") or "", "code": error.get("code")}
            response.data = {"success": False, **body} if self.answers_success else body
        return response
