"""The Celery app, and sending tasks by name so that services never import task modules."""

from __future__ import annotations

import logging
import os

from amqp.exceptions import ChannelError
from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simsite.settings")

logger = logging.getLogger(__name__)

app = Celery("simsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (
    Queue("default", Exchange("default"), routing_key="default"),
    Queue("embed", Exchange("embed"), routing_key="embed"),
    Queue("query", Exchange("query"), routing_key="query"),
)
app.autodiscover_tasks()


def task_send(name: str, *args: object, **options: object) -> bool:
    """Queue task ``name`` (routed by settings); False when the broker cannot take it.

    Callers record the work in the database first, so a message that could not be sent is
    found and re-sent by the reconciler once the broker is back: a request never fails
    because Redis is down.
    """
    try:
        # No result is awaited: the result backend is not touched, so a dead Redis costs one
        # quick refused connection, not the backend's reconnection loop.
        app.send_task(name, args=list(args), ignore_result=True, **options)
    except Exception as error:  # noqa: BLE001 - kombu/redis raise many types for "broker unreachable"
        logger.warning(
            "could not queue %s%s (%s: %s); the reconciler will retry", name, args, type(error).__name__, error
        )
        return False
    return True


def queue_length(queue: str) -> int | None:
    """Messages waiting in ``queue`` (not those a worker holds), or None if unknown."""
    try:
        with app.connection_for_read() as connection:
            return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
    except ChannelError as error:
        # Redis: a queue nothing has declared yet has no binding, so it holds no message.
        return 0 if str(getattr(error, "reply_code", "")) == "404" else None
    except Exception:  # noqa: BLE001 - unknown is the honest answer when the broker does not say
        return None
