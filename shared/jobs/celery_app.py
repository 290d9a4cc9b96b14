"""Celery app factory with the queue settings that keep accepted jobs safe (ARCHITECTURE.md):
late acks + reject on worker lost + prefetch 1, so a killed child's task is redelivered at once;
a short visibility timeout (2x the task limit) with a fast unacked-restore scan, so a task of a
dead worker *process* comes back in seconds, not an hour; JSON only (pickle on a broker is remote
code execution)."""

from __future__ import annotations

from celery import Celery

from shared.config import Settings


def make_celery(name: str, settings: Settings) -> Celery:
    app = Celery(name, broker=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # results live in the job store, keyed by job id
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=max(1, settings.task_time_limit_s - 5),
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout(),
            "unacked_restore_interval": settings.unacked_restore_interval_s,
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        task_create_missing_queues=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    return app
