"""JSON logs carrying the job id and tenant of whatever the process is doing right now."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

job_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="")
tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, job_id, tenant, plus `extra` fields."""

    _RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if job_id := job_id_var.get():
            out["job_id"] = job_id
        if tenant := tenant_var.get():
            out["tenant"] = tenant
        for k, v in record.__dict__.items():
            if k not in self._RESERVED and not k.startswith("_"):
                out[k] = v if isinstance(v, str | int | float | bool | None) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(level: str = "INFO", as_json: bool = True) -> None:
    """Sets the root handler once per process (idempotent)."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(JsonFormatter() if as_json else plain)
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Celery and kombu are chatty at INFO about every connection; keep our own lines readable.
    for noisy in ("kombu", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
