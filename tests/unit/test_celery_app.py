"""The Celery settings that keep the wire safe and accepted jobs recoverable."""

from __future__ import annotations

from shared.config import Settings
from shared.jobs.celery_app import make_celery


def test_json_only_never_pickle():
    conf = make_celery("t", Settings(redis_url="redis://127.0.0.1:6379/15")).conf
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json" and conf.result_serializer == "json"


def test_late_acks_and_redelivery_settings():
    conf = make_celery("t", Settings(redis_url="redis://127.0.0.1:6379/15",
                                     task_time_limit_s=30)).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 60  # 2x the task limit
