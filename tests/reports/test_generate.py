"""Generating reports in this process: each kind's rows, csv and xlsx, failures
leaving no file, a second run leaving one file, the ready emails, schedules, retention."""

import datetime
from decimal import Decimal

import openpyxl
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from catalog import services as catalog
from integrations.models import InventorySyncState, OdooOrderLink
from notifications.models import Delivery, Notification
from orders.models import Order
from reports import services, tasks
from reports.models import Report, ReportSchedule

from ..factories import ProductFactory, StoreFactory, UserFactory, place_order
from .conftest import read_csv, sales_fixture, stored_files

pytestmark = pytest.mark.django_db
MARCH = {"date_from": "2026-03-01", "date_to": "2026-03-31"}


def generate(user, kind, filters, format="csv") -> Report:
    report = services.report_request(user=user, kind=kind, format=format, filters=filters)
    assert tasks.generate_report(report_id=report.id) in ("ready", "failed")
    report.refresh_from_db()
    return report


def test_sales_by_store_and_day(media):
    store_a, _ = sales_fixture()
    user = UserFactory(is_staff=True)

    report = generate(user, "sales", MARCH)

    assert report.status == "ready" and report.rows_written == 2 and report.rows_estimated >= 1
    assert read_csv(report) == [
        ["store", "day", "status", "currency", "orders", "units", "revenue"],
        ["a-store", "2026-03-10", "paid", "EUR", "2", "5", "17.00"],
        ["b-store", "2026-03-10", "pending", "EUR", "1", "1", "1.00"],
    ]
    assert read_csv(generate(user, "sales", {**MARCH, "stores": [store_a.id]}))[1:] == [
        ["a-store", "2026-03-10", "paid", "EUR", "2", "5", "17.00"]
    ]
    assert read_csv(generate(user, "sales", {**MARCH, "category": "no-such"}))[1:] == []
    assert read_csv(generate(user, "sales", {"date_from": "2026-03-11", "date_to": "2026-03-31"}))[1:] == []


def test_sales_as_xlsx(media):
    sales_fixture()
    report = generate(UserFactory(is_staff=True), "sales", MARCH, format="xlsx")

    assert report.file_name.endswith(".xlsx")
    with default_storage.open(report.file_name, "rb") as stored:
        sheet = openpyxl.load_workbook(stored, read_only=True).active
        rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert rows[0] == ["store", "day", "status", "currency", "orders", "units", "revenue"]
    assert rows[1][:2] == ["a-store", datetime.datetime(2026, 3, 10)] and rows[1][4:] == [2, 5, 17]


def test_top_products_by_revenue_counts_sold_orders_only(media):
    store = StoreFactory()
    user = UserFactory(is_staff=True)
    cheap = place_order(user=user, store=store, lines=((Decimal("1.00"), 5),))
    dear = place_order(user=user, store=store, lines=((Decimal("9.00"), 1),))
    unpaid = place_order(user=user, store=store, lines=((Decimal("50.00"), 1),))
    Order.objects.filter(id__in=[cheap.id, dear.id]).update(status="paid")
    today = timezone.localdate().isoformat()

    rows = read_csv(generate(user, "top_products", {"date_from": today, "date_to": today}))

    assert [row[0] for row in rows[1:]] == ["1", "2"]
    assert [row[1] for row in rows[1:]] == [dear.items.get().sku, cheap.items.get().sku]
    assert rows[1][5:] == ["1", "1", "9.00"]
    limited = read_csv(generate(user, "top_products", {"date_from": today, "date_to": today, "limit": 1}))
    assert len(limited) == 2 and unpaid.items.get().sku not in str(limited)


def test_low_stock_and_stock_outs(media):
    store = StoreFactory(code="s1")
    out, low, plenty = ProductFactory(sku="OUT"), ProductFactory(sku="LOW"), ProductFactory(sku="PLENTY")
    for product, quantity in ((out, 0), (low, 3), (plenty, 50)):
        catalog.stock_level_set(product=product, store=store, quantity=quantity)

    rows = read_csv(generate(UserFactory(is_staff=True), "low_stock", {}))

    assert [(r[0], r[1], r[4], r[5]) for r in rows[1:]] == [("s1", "OUT", "0", "out"), ("s1", "LOW", "3", "low")]
    assert len(read_csv(generate(UserFactory(is_staff=True), "low_stock", {"threshold": 60}))) == 4


def test_notification_delivery_by_channel_and_day(media):
    user = UserFactory(is_staff=True)
    notification = Notification.objects.create(user=user, event="order.paid", title="t", body="b")
    Delivery.objects.create(notification=notification, channel="email", status="sent", attempts=1)
    Delivery.objects.create(notification=notification, channel="push", status="failed", attempts=3)
    today = timezone.localdate().isoformat()

    rows = read_csv(generate(user, "notifications", {"date_from": today, "date_to": today}))

    assert rows[1:] == [
        [today, "email", "1", "1", "0", "0", "0", "0", "1"],
        [today, "push", "1", "0", "1", "0", "0", "0", "3"],
    ]


def test_odoo_sync_status(media):
    store = StoreFactory(code="s1")
    order = place_order(store=store)
    OdooOrderLink.objects.create(order=order, status="failed", error="boom")
    synced_at = timezone.now().replace(microsecond=0)
    InventorySyncState.objects.create(
        product=order.items.get().product, store=store, status="synced", synced_at=synced_at
    )

    rows = read_csv(generate(UserFactory(is_staff=True), "odoo_sync", {}))

    assert rows[1][:6] == ["s1", "inventory", "0", "0", "1", "0"]
    assert rows[1][6].startswith(synced_at.strftime("%Y-%m-%d %H:%M:%S"))
    assert rows[2] == ["s1", "orders", "0", "1", "0", "0", ""]


def test_a_failed_generation_says_why_and_leaves_no_file(media, settings, tmp_path):
    sales_fixture()
    settings.REPORT_MAX_ROWS = 1  # the second row is one too many

    report = generate(UserFactory(is_staff=True), "sales", MARCH)

    assert report.status == "failed" and "More than 1 rows" in report.error
    assert report.file_name == "" and stored_files(media) == []
    assert list((tmp_path / "tmp").iterdir()) == []  # the partial file is gone too
    assert not Notification.objects.exists()
    assert tasks.generate_report(report_id=report.id) == "failed"  # running again changes nothing


def test_running_twice_leaves_one_file_and_one_email(media):
    sales_fixture()
    user = UserFactory(is_staff=True, email="boss@example.com")
    report = services.report_request(user=user, kind="sales", format="csv", filters=MARCH)
    # A lost run stored a file under the report's name and died before recording it.
    default_storage.save(services.file_name(report), ContentFile(b"stale"))
    Report.objects.filter(id=report.id).update(status="running")

    assert tasks.generate_report(report_id=report.id) == "ready"
    assert tasks.generate_report(report_id=report.id) == "ready"

    report.refresh_from_db()
    assert stored_files(media) == [report.file_name]
    assert read_csv(report)[0][0] == "store"  # the complete file replaced the stale one
    assert report.attempts == 1
    notification = Notification.objects.get(event="report.ready")
    assert notification.user == user and notification.data["report_id"] == report.id
    assert Delivery.objects.filter(notification=notification).values_list("channel", "status").get() == (
        "email",
        "pending",
    )
    assert f"/api/v1/reports/{report.id}/download?token=" in notification.data["download_url"]


def test_a_failed_report_is_reopened_by_an_inbox_retry(media, settings):
    from celeste.background.queue import failed_task_record
    from celeste.background.services import failed_task_retry

    sales_fixture()
    settings.REPORT_MAX_ROWS = 1
    report = generate(UserFactory(is_staff=True), "sales", MARCH)
    settings.REPORT_MAX_ROWS = 100
    # As the task's on_failure records a job whose retries ran out.
    failed = failed_task_record(
        task_name=tasks.generate_report.name,
        task_id="job-1",
        kwargs={"report_id": report.id},
        exc=RuntimeError("storage down"),
        tb="",
        attempts=3,
    )

    assert failed_task_retry(failed_task_ids=[failed.id]) == 1

    report.refresh_from_db()
    assert report.status == "pending" and report.error == ""
    assert tasks.generate_report(report_id=report.id) == "ready"


def crontab() -> CrontabSchedule:
    return CrontabSchedule.objects.create(minute="0", hour="6", day_of_week="1")


def test_a_schedule_keeps_its_beat_row_and_each_run_is_a_report(media):
    owner, recipient = UserFactory(is_staff=True), UserFactory(is_staff=True)
    store = StoreFactory()
    schedule = ReportSchedule.objects.create(name="Weekly sales", kind="sales", period_days=7, crontab=crontab())
    schedule.stores.set([store])
    schedule.recipients.set([recipient])
    schedule.created_by = owner
    schedule.save()

    services.schedule_save(schedule=schedule)

    periodic = PeriodicTask.objects.get(id=schedule.periodic_task_id)
    assert periodic.task == tasks.run_report_schedule.name and periodic.crontab == schedule.crontab
    assert periodic.kwargs == f'{{"schedule_id": {schedule.id}}}' and periodic.enabled

    first = tasks.run_report_schedule(schedule_id=schedule.id)
    assert tasks.run_report_schedule(schedule_id=schedule.id) == first  # the same tick: no second report
    report = Report.objects.get(id=first)
    yesterday = timezone.localdate() - datetime.timedelta(days=1)
    assert report.filters == {
        "date_from": (yesterday - datetime.timedelta(days=6)).isoformat(),
        "date_to": yesterday.isoformat(),
        "stores": [store.id],
    }
    assert report.requested_by == owner and report.schedule == schedule
    tasks.generate_report(report_id=report.id)
    assert set(Notification.objects.values_list("user_id", flat=True)) == {owner.id, recipient.id}

    schedule.enabled = False
    schedule.save()  # as the admin does, before it calls schedule_save
    services.schedule_save(schedule=schedule)
    assert not PeriodicTask.objects.get(id=periodic.id).enabled
    assert tasks.run_report_schedule(schedule_id=schedule.id) is None
    services.schedule_delete(schedule=schedule)
    assert not PeriodicTask.objects.filter(id=periodic.id).exists()


def test_a_schedule_past_the_longest_range_makes_a_failed_run(media, settings):
    settings.REPORT_MAX_RANGE_DAYS = 10
    schedule = ReportSchedule.objects.create(name="Too long", kind="sales", period_days=30, crontab=crontab())

    report = Report.objects.get(id=tasks.run_report_schedule(schedule_id=schedule.id))

    assert report.status == "failed" and "date_to" in report.error


def test_retention_deletes_old_files_and_rows(media, settings):
    sales_fixture()
    settings.REPORT_RETENTION_DAYS = 30
    user = UserFactory(is_staff=True)
    old, recent = generate(user, "sales", MARCH), generate(user, "sales", MARCH)
    running = services.report_request(user=user, kind="low_stock", format="csv", filters={})
    long_ago = timezone.now() - datetime.timedelta(days=31)
    Report.objects.filter(id__in=[old.id, running.id]).update(created_at=long_ago)
    Report.objects.filter(id=running.id).update(status="running")

    assert tasks.purge_reports() == 1
    assert tasks.purge_reports() == 0  # running again finds nothing more

    assert set(Report.objects.values_list("id", flat=True)) == {recent.id, running.id}
    assert stored_files(media) == [recent.file_name]


@pytest.mark.django_db(transaction=True)
def test_progress_is_saved_every_n_rows_while_the_read_runs(media, settings):
    """A trigger records every change of rows_written as it commits: the progress
    connection's updates land during the read, every N rows, not per row."""
    settings.REPORT_PROGRESS_EVERY_ROWS = 3
    settings.REPORT_FETCH_ROWS = 2
    store = StoreFactory()
    for n in range(7):
        catalog.stock_level_set(product=ProductFactory(), store=store, quantity=n % 2)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE TABLE report_progress_seen (rows bigint, status text);
            CREATE FUNCTION report_progress_seen() RETURNS trigger AS $$
            BEGIN INSERT INTO report_progress_seen VALUES (NEW.rows_written, NEW.status); RETURN NEW; END
            $$ LANGUAGE plpgsql;
            CREATE TRIGGER report_progress_seen AFTER UPDATE OF rows_written ON reports_report
            FOR EACH ROW EXECUTE FUNCTION report_progress_seen();
            """
        )
    try:
        report = generate(UserFactory(is_staff=True), "low_stock", {})
        with connection.cursor() as cursor:
            cursor.execute("SELECT rows, status FROM report_progress_seen")
            seen = cursor.fetchall()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE report_progress_seen; DROP FUNCTION report_progress_seen() CASCADE")

    assert report.rows_written == 7
    # 0 when the run starts; 3 and 6 while running; 7 at the end of the read, and the ready row.
    assert seen == [(0, "running"), (3, "running"), (6, "running"), (7, "running"), (7, "ready")]
