"""Report writes: requesting, generating (streamed from a server-side cursor into a
temporary file, stored under its final name only when complete), telling the
recipients, schedules and retention."""

import datetime
import json
import logging
import os
import tempfile
import time

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from celeste.background.queue import enqueue
from notifications.models import NotificationEvent
from notifications.services import notification_email

from . import kinds, links, tasks, writers
from .metrics import REPORT_ROWS, REPORT_SECONDS, REPORTS
from .models import Report, ReportSchedule, ReportStatus

logger = logging.getLogger(__name__)


def report_request(*, user, kind: str, format: str, filters: dict, schedule=None, scheduled_for=None) -> Report:
    """Check the request (kinds.ReportInvalid names each bad field; nothing is
    written then), record it and queue its generation."""
    clean = kinds.request_clean(kind=kind, format=format, filters=filters)
    with transaction.atomic():
        report = Report.objects.create(
            kind=kind,
            format=format,
            filters=clean,
            requested_by=user,
            schedule=schedule,
            scheduled_for=scheduled_for,
        )
        enqueue(tasks.generate_report, report_id=report.id)
    logger.info("report.requested", extra={"report_id": report.id, "kind": kind, "format": format})
    return report


def file_name(report: Report) -> str:
    """Where a report's file lives: one name per report, so a second run replaces the first's file.
    The folder carries a key derived from SECRET_KEY: on a bucket whose objects a CDN may serve,
    nobody can guess a report's address from its id; downloads go through the checked link."""
    key = salted_hmac("reports.file", str(report.id)).hexdigest()[:24]
    return f"reports/{report.id}-{key}/{report.download_filename}"


# --- generation ------------------------------------------------------------------


def report_generate(*, report_id: int) -> str:
    """Generate the report's file; returns its status. Idempotent: a report that is
    ready or failed is left alone; one left ``running`` by a lost worker is started
    over, and its file replaces whatever the lost run stored.

    Raises what a retry may cure (the database, the storage); a report too large
    for its format or REPORT_MAX_ROWS fails for good, with the reason."""
    with transaction.atomic():
        report = Report.objects.select_for_update().get(id=report_id)
        if report.status in (ReportStatus.READY, ReportStatus.FAILED):
            return report.status
        report.status = ReportStatus.RUNNING
        report.attempts += 1
        report.started_at = timezone.now()
        report.rows_written = 0
        report.save(update_fields=["status", "attempts", "started_at", "rows_written", "updated_at"])
    began = time.monotonic()
    try:
        rows, size = _write_and_store(report)
    except writers.ReportTooLarge as exc:
        report_mark_failed(report_id=report.id, error=str(exc))
        return ReportStatus.FAILED
    with transaction.atomic():
        report = Report.objects.select_for_update().get(id=report_id)
        if report.status != ReportStatus.RUNNING:  # a twin run finished first, with the same file name
            return report.status
        report.status = ReportStatus.READY
        report.file_name, report.file_size, report.rows_written = file_name(report), size, rows
        report.finished_at = timezone.now()
        report.error = ""
        report.save(
            update_fields=["status", "file_name", "file_size", "rows_written", "finished_at", "error", "updated_at"]
        )
        report_notify(report=report)
    REPORTS.labels(kind=report.kind, outcome=ReportStatus.READY).inc()
    REPORT_ROWS.labels(kind=report.kind).inc(rows)
    REPORT_SECONDS.labels(kind=report.kind).observe(time.monotonic() - began)
    logger.info("report.ready", extra={"report_id": report.id, "rows": rows, "bytes": size})
    return ReportStatus.READY


def _write_and_store(report: Report) -> tuple[int, int]:
    """Stream the kind's query into a local temporary file, then save it to the
    default storage under the report's name. Returns (rows, bytes).

    The rows come from a server-side cursor, which lives in a transaction; progress
    goes through a connection of its own, so it is seen while that transaction runs."""
    sql, params = kinds.query(report.kind, report.filters)
    Report.objects.filter(id=report.id).update(rows_estimated=_estimate(sql, params), updated_at=timezone.now())
    side = connection.copy()
    written = 0

    def progress(rows: int) -> None:
        nonlocal written
        written = rows
        with side.cursor() as cursor:
            cursor.execute(
                "UPDATE reports_report SET rows_written = %s, updated_at = now() WHERE id = %s", [rows, report.id]
            )

    fd, path = tempfile.mkstemp(prefix=f"report-{report.id}-", suffix=f".{report.format}.part", dir=_tmp_dir())
    os.close(fd)
    try:
        with transaction.atomic():
            connection.ensure_connection()
            with connection.cursor() as settings_cursor:
                # Every row will be read: plan for the whole result, not (as for a cursor by
                # default) for the first 10% of it, which picks slower plans for aggregates.
                settings_cursor.execute("SET LOCAL cursor_tuple_fraction = 1.0")
            with connection.connection.cursor(name=f"report_{report.id}") as cursor:
                cursor.itersize = settings.REPORT_FETCH_ROWS
                cursor.execute(sql, params)
                rows = writers.counted(
                    cursor,
                    limit=writers.max_rows(report.format),
                    every=settings.REPORT_PROGRESS_EVERY_ROWS,
                    progress=progress,
                )
                writers.write(report.format, path, kinds.columns(report.kind), rows)
        return written, _store(file_name(report), path)
    finally:
        side.close()
        os.unlink(path)


def _tmp_dir() -> str | None:
    return settings.REPORT_TMP_DIR or None


def _estimate(sql: str, params: dict) -> int:
    """The planner's row estimate for the report's query (no rows are read)."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return int(plan[0]["Plan"]["Plan Rows"])


def _store(name: str, path: str) -> int:
    """Save the complete file under ``name``, replacing a copy a lost run stored."""
    if default_storage.exists(name):
        default_storage.delete(name)
    with open(path, "rb") as complete:
        saved = default_storage.save(name, File(complete, name=os.path.basename(name)))
    if saved != name:  # another run stored it in between; keep one file under the report's name
        default_storage.delete(saved)
    return default_storage.size(name)


def report_mark_failed(*, report_id: int, error: str) -> bool:
    """The report failed for good: no file is presented (a copy a run stored before
    failing to record it is removed). Returns whether it was still pending or running."""
    report = Report.objects.filter(id=report_id).first()
    if report is None:
        return False
    failed = Report.objects.filter(id=report_id, status__in=[ReportStatus.PENDING, ReportStatus.RUNNING]).update(
        status=ReportStatus.FAILED,
        error=error[:2000],
        file_name="",
        finished_at=timezone.now(),
        updated_at=timezone.now(),
    )
    if failed:
        default_storage.delete(file_name(report))
        REPORTS.labels(kind=report.kind, outcome=ReportStatus.FAILED).inc()
        logger.warning("report.failed", extra={"report_id": report_id, "error": error})
    return bool(failed)


def report_reopen(*, report_id: int) -> bool:
    """A failed report is pending again (a retry from the failed-task inbox redoes it)."""
    return bool(
        Report.objects.filter(id=report_id, status=ReportStatus.FAILED).update(
            status=ReportStatus.PENDING, error="", updated_at=timezone.now()
        )
    )


def report_recipients(report: Report) -> list:
    """Who is told the report is ready: its requester and its schedule's recipients."""
    users = {report.requested_by_id: report.requested_by} if report.requested_by_id else {}
    if report.schedule_id:
        users.update({user.id: user for user in report.schedule.recipients.all()})
    return [user for user in users.values() if user.email]


def report_notify(*, report: Report) -> int:
    """Queue one email per recipient, each with a link signed for them; once per
    report (the caller holds the report's row lock). Returns the emails queued."""
    if report.notified_at is not None:
        return 0
    recipients = report_recipients(report)
    for user in recipients:
        notification_email(
            user_id=user.id,
            event=NotificationEvent.REPORT_READY,
            title=f"Your report is ready: {report.get_kind_display()} #{report.id}",
            body=f"{report.get_kind_display()} ({report.rows_written} rows, {report.format}) is ready.",
            data={
                "report_id": report.id,
                "download_url": links.download_url(report_id=report.id, user_id=user.id),
            },
        )
    Report.objects.filter(id=report.id).update(notified_at=timezone.now())
    return len(recipients)


# --- schedules -------------------------------------------------------------------


@transaction.atomic
def schedule_save(*, schedule: ReportSchedule) -> ReportSchedule:
    """Keep the schedule's django-celery-beat row in step with it (crontab, on/off)."""
    from django_celery_beat.models import PeriodicTask

    values = {
        "name": f"Report schedule #{schedule.id}: {schedule.name}"[:200],
        "task": tasks.run_report_schedule.name,
        "crontab": schedule.crontab,
        "interval": None,
        "kwargs": json.dumps({"schedule_id": schedule.id}),
        "enabled": schedule.enabled,
    }
    if schedule.periodic_task_id:
        PeriodicTask.objects.filter(id=schedule.periodic_task_id).update(**values)
        # .update() skips PeriodicTask.save(), which tells beat to reload its schedule.
        PeriodicTask.objects.get(id=schedule.periodic_task_id).save()
    else:
        schedule.periodic_task = PeriodicTask.objects.create(**values)
        schedule.save(update_fields=["periodic_task", "updated_at"])
    return schedule


@transaction.atomic
def schedule_delete(*, schedule: ReportSchedule) -> None:
    periodic = schedule.periodic_task
    schedule.delete()
    if periodic is not None:
        periodic.delete()


def schedule_filters(*, kind: str, period_days: int, store_ids: list[int], category: str, today: datetime.date) -> dict:
    """A scheduled run's filters: the ``period_days`` days before ``today`` and the
    schedule's stores and category, those the kind takes (a category set on a kind
    without one is passed on, so the check names it)."""
    date_to = today - datetime.timedelta(days=1)
    applies = kinds.MODULES[kind].APPLIES
    dates = {
        "date_from": (date_to - datetime.timedelta(days=max(period_days, 1) - 1)).isoformat(),
        "date_to": date_to.isoformat(),
    }
    filters = {name: value for name, value in dates.items() if name in applies}
    return {**filters, "stores": store_ids, "category": category}


def schedule_run(*, schedule_id: int) -> Report | None:
    """One run of a schedule: a report of its own. A repeated beat tick (same minute)
    makes no second report; a schedule that is off or gone makes none."""
    now = timezone.now()
    tick = now.replace(second=0, microsecond=0)
    schedule = ReportSchedule.objects.filter(id=schedule_id, enabled=True).first()
    if schedule is None:
        return None
    existing = Report.objects.filter(schedule=schedule, scheduled_for=tick).first()
    if existing:
        return existing
    filters = schedule_filters(
        kind=schedule.kind,
        period_days=schedule.period_days,
        store_ids=[store.id for store in schedule.stores.all()],
        category=schedule.category,
        today=timezone.localdate(now),
    )
    try:
        return report_request(
            user=schedule.created_by,
            kind=schedule.kind,
            format=schedule.format,
            filters=filters,
            schedule=schedule,
            scheduled_for=tick,
        )
    except IntegrityError:  # a twin tick recorded it first
        return Report.objects.get(schedule=schedule, scheduled_for=tick)
    except kinds.ReportInvalid as exc:  # e.g. a period longer than allowed: visible as a failed run
        return Report.objects.create(
            kind=schedule.kind,
            format=schedule.format,
            filters=filters,
            requested_by=schedule.created_by,
            schedule=schedule,
            scheduled_for=tick,
            status=ReportStatus.FAILED,
            error=str(exc),
            finished_at=now,
        )


# --- retention -------------------------------------------------------------------


def reports_purge(*, batch: int = 500) -> int:
    """Delete reports older than REPORT_RETENTION_DAYS, file first, then the row (a
    run stopped in between leaves a row whose file is gone, deleted next time).
    Running ones are left to finish. Returns how many were deleted."""
    cutoff = timezone.now() - datetime.timedelta(days=settings.REPORT_RETENTION_DAYS)
    deleted = 0
    while True:
        old = list(Report.objects.filter(created_at__lt=cutoff).exclude(status=ReportStatus.RUNNING)[:batch])
        if not old:
            return deleted
        for report in old:
            default_storage.delete(file_name(report))
        deleted += Report.objects.filter(id__in=[report.id for report in old]).delete()[1].get("reports.Report", 0)
        logger.info("reports.purged", extra={"count": len(old)})


def report_file_open(report: Report):
    """The ready report's file, opened for streaming from the default storage."""
    return default_storage.open(report.file_name, "rb")
