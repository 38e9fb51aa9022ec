"""Server-sent event streams of a job's progress (index jobs, CSV imports)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

from django.conf import settings
from django.http import StreamingHttpResponse


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
