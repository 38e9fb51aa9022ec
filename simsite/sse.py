"""Server-sent event streams of a job's progress (index jobs, CSV imports)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

from django.conf import settings
from django.http import StreamingHttpResponse
from rest_framework.renderers import BaseRenderer
from rest_framework.settings import api_settings

from simsite.errors import ServiceError

# Yielded by ``row_updates`` at each poll without news: a chance to send a heartbeat.
TICK = object()


def row_updates(fetch: Callable[[], object | None], *, is_finished: Callable[[object], bool],
                signature: Callable[[object], tuple]) -> Iterator[object]:  # fmt: skip
    """The row each time its ``signature`` changes (``TICK`` at the polls between), until it
    is finished, gone, or the stream's time is up (``JOB_EVENTS_TIMEOUT``)."""
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
        else:
            yield TICK
        if is_finished(row):
            return
        time.sleep(settings.JOB_EVENTS_POLL_SECONDS)


class _Slots:
    """Open event streams in this process: each holds a server thread, so there are at most
    ``JOB_EVENTS_MAX_STREAMS`` (the rest of the threads keep serving requests)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0

    def take(self) -> None:
        with self.lock:
            if self.open >= settings.JOB_EVENTS_MAX_STREAMS:
                raise StreamsBusy()
            self.open += 1

    def give_back(self) -> None:
        with self.lock:
            self.open -= 1


class StreamsBusy(ServiceError):
    status_code = 503

    def __init__(self) -> None:
        super().__init__("too_many_streams", "Too many progress streams are open on this server; poll the job "
                         "instead, or try again shortly.")  # fmt: skip


_slots = _Slots()


class _Stream:
    """The events of one response; its slot is given back exactly once, when the response is
    closed (the client went, the job ended, or the stream's time was up)."""

    def __init__(self, events: Iterator[object], render: Callable[[object], object]):
        self.events, self.render = events, render
        self.released = False
        self.chunks = self._chunks()

    def _chunks(self) -> Iterator[str]:
        # EventSource reconnects after this long when the stream ends before the job does.
        yield f"retry: {settings.JOB_EVENTS_RETRY_MS}\n\n"
        last = time.monotonic()
        for event in self.events:
            now = time.monotonic()
            if event is TICK:
                # A comment line: keeps proxies from timing out, and finds a client that left
                # (the write fails) within a heartbeat instead of at the end of the stream.
                if now - last >= settings.JOB_EVENTS_HEARTBEAT_SECONDS:
                    last = now
                    yield ": keep-alive\n\n"
                continue
            last = now
            yield f"data: {json.dumps(self.render(event), default=str)}\n\n"

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self.chunks)

    def close(self) -> None:
        self.chunks.close()
        if not self.released:
            self.released = True
            _slots.give_back()


def event_stream_response(events: Iterator[object], render: Callable[[object], object] = lambda event: event,
                          ) -> StreamingHttpResponse:  # fmt: skip
    """A ``text/event-stream`` response with one ``data:`` event per rendered event (``TICK``s
    become heartbeats); 503 ``too_many_streams`` when this process has all the streams it may."""
    _slots.take()
    response = StreamingHttpResponse(_Stream(events, render), content_type="text/event-stream")
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
