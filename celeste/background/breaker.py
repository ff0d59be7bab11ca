"""The automatic rollback breaker, per task type (policy on its TaskSwitch row).

Closed: the runs' outcomes are counted in Redis, in 10-second buckets (only for
tasks whose breaker is on; one pipelined round trip per run). Every
BREAKER_EVALUATE_SECONDS a periodic task looks at each window: at least
``breaker_min_runs`` runs and an error rate (failed or retried runs / runs) at
or above ``breaker_error_rate`` opens the breaker — the switch goes to its
fallback (``sync`` or ``off``), the change is recorded (by "breaker", with the
figures) and the staff on call (BREAKER_ALERT_EMAILS) get an email.
Open: after ``breaker_cooldown_seconds`` it half-opens — the switch is
``background`` again and the runs are trials, counted apart. Half-open: one
failed trial opens it again (a new cool-down); ``breaker_trial_runs``
successful trials close it.
"""

import logging
import time

import redis
from django.conf import settings
from django.core.mail import send_mail
from django.db import DatabaseError, transaction
from django.utils import timezone

from .models import BreakerState, TaskMode, TaskSwitch
from .redis import client
from .switches import task_switch

logger = logging.getLogger(__name__)
BUCKET_SECONDS = 10
BY = "breaker"


def _bucket_key(task_name: str, bucket: int) -> str:
    return f"celeste:breaker:{task_name}:{bucket}"


def _trial_key(task_name: str) -> str:
    return f"celeste:breaker:{task_name}:trial"


def outcome_record(task_name: str, *, ok: bool) -> None:
    """Count one run's outcome, if the task's breaker is on (a task run's last step).
    Never raises: it runs in the task's retry and finish paths, which must go on
    while the database restarts (then the switch cannot be read, and the run is
    not counted)."""
    try:
        switch = task_switch(task_name)
    except DatabaseError as exc:
        logger.warning("breaker.outcome_not_counted", extra={"task_name": task_name, "error": repr(exc)})
        return
    if not switch.breaker_enabled:
        return
    if switch.breaker_state == BreakerState.HALF_OPEN:
        key = _trial_key(task_name)
    else:
        key = _bucket_key(task_name, int(time.time() // BUCKET_SECONDS))
    try:
        client().pipeline().hincrby(key, "ok" if ok else "error", 1).expire(key, 86_400).execute()
    except redis.RedisError as exc:  # the breaker sees fewer runs; the work is not affected
        logger.warning("breaker.outcome_not_counted", extra={"task_name": task_name, "error": repr(exc)})


def _figures(keys: list[str]) -> dict:
    pipe = client().pipeline()
    for key in keys:
        pipe.hmget(key, "ok", "error")
    ok = errors = 0
    for counts in pipe.execute():
        ok += int(counts[0] or 0)
        errors += int(counts[1] or 0)
    runs = ok + errors
    return {"runs": runs, "errors": errors, "error_rate": round(errors / runs, 3) if runs else 0.0}


def window_figures(task_name: str, window_seconds: int) -> dict:
    now = int(time.time() // BUCKET_SECONDS)
    first = now - max(window_seconds // BUCKET_SECONDS, 1) + 1
    return _figures([_bucket_key(task_name, bucket) for bucket in range(first, now + 1)])


def trial_figures(task_name: str) -> dict:
    return _figures([_trial_key(task_name)])


def breakers_evaluate() -> list[str]:
    """One round over every switch with its breaker on; returns what changed."""
    changed = []
    for switch in TaskSwitch.objects.filter(breaker_enabled=True):
        try:
            change = _evaluate(switch)
        except redis.RedisError as exc:  # no figures: leave every breaker as it is
            logger.warning("breaker.no_figures", extra={"task_name": switch.task_name, "error": repr(exc)})
            continue
        if change:
            changed.append(f"{switch.task_name}: {change}")
    return changed


def _evaluate(switch: TaskSwitch) -> str | None:
    now = timezone.now()
    since = (now - switch.breaker_changed_at).total_seconds() if switch.breaker_changed_at else float("inf")
    if switch.breaker_state == BreakerState.CLOSED:
        figures = window_figures(switch.task_name, switch.breaker_window_seconds)
        if figures["runs"] >= switch.breaker_min_runs and figures["error_rate"] >= switch.breaker_error_rate:
            return _open(switch, figures, "error rate over the window")
    elif switch.breaker_state == BreakerState.OPEN:
        if since >= switch.breaker_cooldown_seconds:
            client().delete(_trial_key(switch.task_name))
            _move(switch, TaskMode.BACKGROUND, BreakerState.HALF_OPEN, "cool-down over: trial runs", {})
            return "half-open"
    else:
        figures = trial_figures(switch.task_name)
        if figures["errors"]:
            return _open(switch, figures, "a trial run failed")
        if figures["runs"] >= switch.breaker_trial_runs:
            _move(switch, TaskMode.BACKGROUND, BreakerState.CLOSED, "trial runs succeeded", figures)
            return "closed"
    return None


def _open(switch: TaskSwitch, figures: dict, why: str) -> str:
    reason = (
        f"Breaker opened: {why} — {figures['errors']} errors in {figures['runs']} runs "
        f"({figures['error_rate']:.0%}, threshold {switch.breaker_error_rate:.0%}); "
        f"{switch.breaker_fallback} for {switch.breaker_cooldown_seconds} s, then trial runs."
    )
    _move(switch, switch.breaker_fallback, BreakerState.OPEN, reason, figures)
    transaction.on_commit(lambda: _alert(switch.task_name, reason))
    return "open"


def _move(switch: TaskSwitch, mode: str, state: str, reason: str, figures: dict) -> None:
    from .services import task_switch_set

    task_switch_set(
        task_name=switch.task_name,
        mode=mode,
        by=BY,
        reason=reason,
        figures=figures,
        breaker_state=state,
        breaker_changed_at=timezone.now(),
    )
    logger.warning("breaker.changed", extra={"task_name": switch.task_name, "state": state, "mode": mode, **figures})


def _alert(task_name: str, reason: str) -> None:
    if not settings.BREAKER_ALERT_EMAILS:
        return
    try:
        send_mail(
            f"[Celeste] {task_name}: breaker opened",
            f"{reason}\n\nThe switch and its history: {settings.PUBLIC_BASE_URL}/admin/background/taskswitch/",
            None,
            settings.BREAKER_ALERT_EMAILS,
        )
    except Exception as exc:  # the switch already flipped; the email is a courtesy
        logger.warning("breaker.alert_failed", extra={"task_name": task_name, "error": repr(exc)})
