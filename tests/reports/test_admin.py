"""The admin's Reports page: the request form, the list with status and progress,
the download link; schedules saved with their beat row."""

import pytest
from django.test import Client
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from reports import services
from reports.models import Report, ReportSchedule

from ..factories import StoreFactory, UserFactory
from .conftest import sales_fixture

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client():
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_the_request_form_queues_a_report_and_the_list_shows_it(admin_client, media):
    sales_fixture()
    page = admin_client.get("/admin/reports/report/add/")
    assert page.status_code == 200 and b"Request the report" in page.content

    response = admin_client.post(
        "/admin/reports/report/add/",
        {"kind": "sales", "format": "csv", "date_from": "2026-03-01", "date_to": "2026-03-31"},
    )

    assert response.status_code == 302
    report = Report.objects.get()
    assert report.status == "pending"
    services.report_generate(report_id=report.id)
    listing = admin_client.get("/admin/reports/report/")
    assert b"2 rows" in listing.content and f"/admin/reports/report/{report.id}/download/".encode() in listing.content
    assert admin_client.get(f"/admin/reports/report/{report.id}/change/").status_code == 200  # read-only page
    to_link = admin_client.get(f"/admin/reports/report/{report.id}/download/")
    download = admin_client.get(to_link["Location"].split("8000", 1)[1])
    assert download.status_code == 200


def test_bad_input_in_the_form_names_the_field_and_queues_nothing(admin_client):
    response = admin_client.post(
        "/admin/reports/report/add/",
        {"kind": "sales", "format": "csv", "date_from": "2026-03-31", "date_to": "2026-03-01"},
    )

    assert response.status_code == 200
    assert response.context["form"].errors == {"date_to": ["Before date_from."]}
    assert not Report.objects.exists()


def test_a_schedule_saved_in_the_admin_gets_its_beat_row(admin_client):
    crontab = CrontabSchedule.objects.create(minute="0", hour="7")
    recipient = UserFactory(is_staff=True)
    store = StoreFactory()
    form = {
        "name": "Daily stock",
        "kind": "low_stock",
        "format": "xlsx",
        "period_days": "1",
        "stores": [store.id],
        "category": "",
        "recipients": [recipient.id],
        "crontab": crontab.id,
        "enabled": "on",
    }

    response = admin_client.post("/admin/reports/reportschedule/add/", form)

    assert response.status_code == 302, response.context["adminform"].form.errors
    schedule = ReportSchedule.objects.get()
    assert PeriodicTask.objects.get(id=schedule.periodic_task_id).crontab == crontab
    too_long = admin_client.post("/admin/reports/reportschedule/add/", {**form, "kind": "sales", "period_days": "5000"})
    assert too_long.status_code == 200 and "period_days" in too_long.context["adminform"].form.errors
    assert ReportSchedule.objects.count() == 1
    listing = admin_client.get("/admin/reports/reportschedule/")
    assert listing.status_code == 200 and b"Daily stock" in listing.content
