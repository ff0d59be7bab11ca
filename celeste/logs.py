"""Log lines that keep their context.

Code logs an event name and its facts as ``extra`` (``logger.error("task.failed",
extra={"task_name": …})``). The formatters here print every one of those fields, and
``ContextFilter`` (installed on the root handler, so every logger gets it, Celery's
own too) adds what the code around the call knows: the running task's ``task_id`` and
``task_name``, and the ``request_id`` of the HTTP request the work started from.

The request id lives in a contextvar: set by ``RequestIdMiddleware`` for a request,
stored on every outbox row ``enqueue()`` writes meanwhile, sent with the job's message
and set again by ``CelesteTask`` while the job runs, so the jobs a task enqueues
inherit it too. One order can be followed from the request to the email.
"""

import json
import logging
import re
import uuid
from contextvars import ContextVar

from celery import current_task
from pythonjsonlogger.json import JsonFormatter

# The id of the request (or the job started from it) this code runs for; "" outside one.
request_id: ContextVar[str] = ContextVar("celeste_request_id", default="")

# A client's X-Request-ID is kept only if it looks like an id: it ends up in our logs.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

# What every LogRecord has; anything else on a record came from ``extra`` or a filter.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def request_id_from_header(value: str | None) -> str:
    """The client's id if it is a plain token of at most 64 characters, else a new one."""
    if value and _VALID_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


class ContextFilter(logging.Filter):
    """Adds ``task_id``/``task_name`` (inside a Celery task) and ``request_id`` (when
    set) to every record, without overriding a field the call passed itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = current_task  # a proxy: falsy outside a running task
        if task and not task.request.called_directly:
            _set_default(record, "task_id", task.request.id)
            _set_default(record, "task_name", task.name)
        if current := request_id.get():
            _set_default(record, "request_id", current)
        return True


class IdleTickFilter(logging.Filter):
    """Drops Celery's per-message INFO lines of quiet ticks (tasks with
    ``quiet_when_idle``, e.g. the outbox relay every few seconds): "received" always
    and "succeeded" when the run found nothing (returned 0). A tick that did work logs
    its own line (``outbox.relayed``); failures and warnings are never dropped."""

    LOGGERS = ("celery.worker.strategy", "celery.app.trace")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.name not in self.LOGGERS or not isinstance(record.args, dict):
            return True
        from celery import current_app

        task = current_app.tasks.get(record.args.get("name", ""))
        if not getattr(task, "quiet_when_idle", False):
            return True
        if record.name == "celery.worker.strategy":
            return False
        return record.args.get("return_value") not in ("0", 0)


def _set_default(record: logging.LogRecord, name: str, value) -> None:
    if value and not hasattr(record, name):
        setattr(record, name, value)


def extra_fields(record: logging.LogRecord) -> dict:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRIBUTES}


class ConsoleFormatter(logging.Formatter):
    """``time level logger event key=value …``: readable, and no field is dropped."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{key}={_console_value(value)}" for key, value in extra_fields(record).items())
        if not fields:
            return line
        # The traceback, if any, stays below the line with the fields.
        head, newline, rest = line.partition("\n")
        return f"{head} {fields}{newline}{rest}"


def _console_value(value) -> str:
    text = str(value)
    # Quoted when it would blur into the next field: error="Boom: x y" stays one field.
    return json.dumps(text) if not text or any(c.isspace() or c in '="' for c in text) else text


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``event`` and every extra field."""

    def __init__(self):
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "message": "event"},
        )
