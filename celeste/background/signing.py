"""Signed task messages: a worker runs only what a Celeste process published.

Anyone who can write to Redis could otherwise push a message that runs any
task with any arguments. So every message any Celeste process publishes (the
outbox publisher and relay, recovered jobs, Celery retries, beat's ticks) is
signed on Celery's ``before_task_publish`` signal, and ``CelesteTask`` verifies
it before the job is claimed or anything runs.

The header ``celeste_signature: t=<unix time>,v1=<hex>`` (the payment webhook's
shape) holds HMAC-SHA256, with the first of TASK_SIGNING_KEYS, over canonical
JSON of the task name, the message id (the job id), its args and kwargs, the
job-header flag and ``t``. Every key of the list verifies, so during a rotation
messages signed with the old key still run.

Not signed: ``eta``, ``expires``, ``retries`` and the request id. They decide
when and how often a job runs and what its log lines show, never what it does.
``t`` is recorded, not enforced: a valid message may wait in its queue through
an outage or for a retry's ETA, and a replayed one does no harm (the ledger
skips a finished job; periodic tasks are sweeps, safe at any time).
"""

import hashlib
import hmac
import time

from django.conf import settings
from kombu.utils import json as kombu_json

from .ledger import JOB_HEADER

SIGNATURE_HEADER = "celeste_signature"


class SignatureError(Exception):
    """The message is unsigned, malformed, or signed with no key we hold."""


def _digest(key: str, *, timestamp: str, task_name: str, task_id: str, args, kwargs, job: bool) -> str:
    # kombu's JSON, as on the wire, so what the worker decodes encodes to the same bytes.
    signed = kombu_json.dumps(
        [timestamp, task_name, task_id, list(args or ()), kwargs or {}, bool(job)],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hmac.new(key.encode(), signed.encode(), hashlib.sha256).hexdigest()


def signature_make(*, task_name: str, task_id: str, args, kwargs, job: bool, timestamp: int | None = None) -> str:
    """The header value for a message, signed with the first key."""
    t = str(int(time.time()) if timestamp is None else timestamp)
    key = settings.TASK_SIGNING_KEYS[0]
    digest = _digest(key, timestamp=t, task_name=task_name, task_id=task_id, args=args, kwargs=kwargs, job=job)
    return f"t={t},v1={digest}"


def signature_verify(*, header, task_name: str, task_id: str, args, kwargs, job: bool) -> None:
    """Raise SignatureError unless ``header`` signs exactly this message with one of the keys."""
    if not header:
        raise SignatureError("no signature")
    if not isinstance(header, str):
        raise SignatureError("malformed signature")
    parts = dict(part.partition("=")[::2] for part in header.split(","))
    timestamp, candidate = parts.get("t", ""), parts.get("v1", "")
    if not timestamp.isdigit() or not candidate:
        raise SignatureError("malformed signature")
    try:
        expected = [
            _digest(key, timestamp=timestamp, task_name=task_name, task_id=task_id, args=args, kwargs=kwargs, job=job)
            for key in settings.TASK_SIGNING_KEYS
        ]
    except (TypeError, ValueError) as exc:  # arguments no Celeste process could have published
        raise SignatureError(f"unsignable arguments: {exc}") from exc
    # Every key is compared in constant time; no early exit on the first match.
    matched = False
    for digest in expected:
        matched |= hmac.compare_digest(candidate, digest)
    if not matched:
        raise SignatureError("signature does not match")


def sign_published_message(sender=None, body=None, headers=None, **_):
    """``before_task_publish``: sign every message this process publishes. The
    headers dict is the one Celery then publishes, so the signature goes along."""
    if not settings.TASK_SIGNING_ENABLED or headers is None:
        return
    args, kwargs = (body[0], body[1]) if isinstance(body, (list, tuple)) and len(body) >= 2 else ((), {})
    headers[SIGNATURE_HEADER] = signature_make(
        task_name=headers.get("task") or sender,
        task_id=headers["id"],
        args=args,
        kwargs=kwargs,
        job=bool(headers.get(JOB_HEADER)),
    )


def connect_signals() -> None:
    from celery.signals import before_task_publish

    before_task_publish.connect(sign_published_message, dispatch_uid="background.sign_published_message", weak=False)
