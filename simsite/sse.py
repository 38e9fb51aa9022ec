"""Server-sent event streams of a job's progress (index jobs, CSV imports)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

from django.conf import settings
from django.http import StreamingHttpResponse
from rest_framework.renderers import BaseRenderer
from rest_framework.settings import api_settings


def row_updates(fetch: Callable[[], object | None], *, is_finished: Callable[[object], bool],
                signature: Callable[[object], tuple]) -> Iterator[object]:  # fmt: skip
    """The row each time its ``signature`` changes, until it is finished, gone, or the
    stream's time is up (``JOB_EVENTS_TIMEOUT``)."""
    last = None
    deadline = time.monotonic() + settings.JOB_EVENTS_TIMEOUT
    while time.monotonic() < deadline:
        row = fetch()
        if row is None:
            return
        current = signature(row)
        if current != last:
            last = current
            yield row
        if is_finished(row):
            return
        time.sleep(settings.JOB_EVENTS_POLL_SECONDS)


def event_stream_response(payloads: Iterator[dict[str, object]]) -> StreamingHttpResponse:
    """A ``text/event-stream`` response with one ``data:`` event per payload."""
    events = (f"data: {json.dumps(payload, default=str)}\n\n" for payload in payloads)
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


class EventStreamRenderer(BaseRenderer):
    """Lets a stream view accept ``Accept: text/event-stream`` (what browsers' EventSource
    sends). The stream itself is a ``StreamingHttpResponse``; only an error answer (a job that
    does not exist) goes through here, as one event holding the error body."""

    media_type = "text/event-stream"
    format = "event-stream"
    charset = "utf-8"

    def render(
        self, data: object, accepted_media_type: str | None = None, renderer_context: dict | None = None
    ) -> bytes:
        return f"data: {json.dumps(data, default=str)}\n\n".encode()


# For the views that stream: JSON as everywhere, and the event stream.
STREAM_RENDERERS = [*api_settings.DEFAULT_RENDERER_CLASSES, EventStreamRenderer]
