"""The reports API: requests (202, and 400 naming the field), staff only, progress, download links."""

import pytest

from reports import services
from reports.models import Report

from ..conftest import BUCKET
from ..factories import StoreFactory, UserFactory
from .conftest import sales_fixture

pytestmark = pytest.mark.django_db
URL = "/api/v1/reports/"
SALES = {"kind": "sales", "format": "csv", "date_from": "2026-03-01", "date_to": "2026-03-31"}


def test_a_request_answers_202_and_queues_one_generation(staff_client, staff_user):
    store = StoreFactory()
    response = staff_client.post(URL, {**SALES, "stores": [store.id], "category": "pantry"}, format="json")

    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "pending" and body["download_url"] is None and body["progress"] is None
    report = Report.objects.get(id=body["id"])
    assert report.requested_by == staff_user
    assert report.filters == {
        "date_from": "2026-03-01",
        "date_to": "2026-03-31",
        "stores": [store.id],
        "category": "pantry",
    }
    from celeste.background.models import OutboxMessage

    assert OutboxMessage.objects.filter(task_name="reports.generate", kwargs={"report_id": report.id}).count() == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "everything"}, "kind"),
        ({"format": "pdf"}, "format"),
        ({"date_from": "2026-04-01", "date_to": "2026-03-01"}, "date_to"),
        ({"date_from": "2023-01-01", "date_to": "2026-01-01"}, "date_to"),  # 3 years and a day
        ({"date_from": "2026-13-01"}, "date_from"),
        ({"date_to": None}, "date_to"),
        ({"stores": [999999]}, "stores"),
        ({"kind": "low_stock", "date_from": "2026-03-01"}, "date_from"),
        ({"kind": "top_products", "limit": 0}, "limit"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(staff_client, change, field):
    body = {name: value for name, value in {**SALES, **change}.items() if value is not None}
    if change.get("kind") == "low_stock":
        body.pop("date_to")

    response = staff_client.post(URL, body, format="json")

    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not Report.objects.exists()


def test_the_longest_range_allowed_is_three_years(staff_client):
    response = staff_client.post(URL, {**SALES, "date_from": "2023-01-01", "date_to": "2025-12-31"}, format="json")
    assert response.status_code == 202


def test_unknown_store_is_named(staff_client):
    known = StoreFactory()
    response = staff_client.post(URL, {**SALES, "stores": [known.id, 424242]}, format="json")
    assert response.status_code == 400
    assert "424242" in str(response.json()["stores"])


def test_non_staff_get_403(customer_client, api_client):
    assert customer_client.post(URL, SALES, format="json").status_code == 403
    assert customer_client.get(URL).status_code == 403
    assert api_client.post(URL, SALES, format="json").status_code in (401, 403)
    assert not Report.objects.exists()


def ready_report(media, requester):
    sales_fixture()
    report = services.report_request(
        user=requester, kind="sales", format="csv", filters={"date_from": "2026-03-01", "date_to": "2026-03-31"}
    )
    services.report_generate(report_id=report.id)
    report.refresh_from_db()
    return report


def test_detail_shows_progress_and_a_link_signed_for_the_viewer(media, staff_client, staff_user):
    report = ready_report(media, staff_user)

    body = staff_client.get(f"{URL}{report.id}").json()

    assert body["status"] == "ready" and body["progress"] == 1.0 and body["rows_written"] == 2
    download = staff_client.get(body["download_url"].split("8000", 1)[1])
    assert download.status_code == 200
    assert download["Content-Disposition"].startswith("attachment")
    assert b"".join(download.streaming_content).decode().splitlines()[0] == (
        "store,day,status,currency,orders,units,revenue"
    )


def test_another_staff_members_link_is_refused(media, staff_client, staff_user):
    from rest_framework.test import APIClient

    report = ready_report(media, staff_user)
    link = staff_client.get(f"{URL}{report.id}").json()["download_url"].split("8000", 1)[1]
    other = APIClient()
    other.force_authenticate(UserFactory(is_staff=True))

    assert other.get(link).status_code == 403
    # Their own link works: staff may download every report, each with a link of their own.
    own = other.get(f"{URL}{report.id}").json()["download_url"].split("8000", 1)[1]
    assert other.get(own).status_code == 200


def test_a_bad_or_foreign_token_and_a_customer_are_refused(media, staff_client, staff_user):
    from rest_framework.test import APIClient

    from reports import links

    report = ready_report(media, staff_user)
    assert staff_client.get(f"{URL}{report.id}/download?token=forged").status_code == 404
    other_report_token = links.download_token(report_id=report.id + 1, user_id=staff_user.id)
    assert staff_client.get(f"{URL}{report.id}/download?token={other_report_token}").status_code == 404
    # A user who is no longer staff (and not the requester) cannot use even a link signed for them.
    customer = UserFactory()
    client = APIClient()
    client.force_authenticate(customer)
    token = links.download_token(report_id=report.id, user_id=customer.id)
    assert client.get(f"{URL}{report.id}/download?token={token}").status_code == 403


def test_an_expired_link_is_refused(media, staff_client, staff_user, settings):
    report = ready_report(media, staff_user)
    link = staff_client.get(f"{URL}{report.id}").json()["download_url"].split("8000", 1)[1]
    settings.REPORT_LINK_MAX_AGE_SECONDS = -1

    response = staff_client.get(link)

    assert response.status_code == 403 and "expired" in response.json()["detail"]


def test_a_report_not_ready_is_a_409(staff_client, staff_user):
    from reports import links

    report = services.report_request(user=staff_user, kind="odoo_sync", format="csv", filters={})
    token = links.download_token(report_id=report.id, user_id=staff_user.id)
    assert staff_client.get(f"{URL}{report.id}/download?token={token}").status_code == 409


def test_on_s3_the_report_is_stored_under_an_unguessable_name_and_streamed_through_the_link(
    s3, settings, tmp_path, staff_client, staff_user
):
    settings.REPORT_TMP_DIR = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    report = ready_report(None, staff_user)

    stored = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert [item["Key"] for item in stored] == [report.file_name]
    assert not report.file_name.startswith(f"reports/{report.id}/")  # the id alone does not find it
    assert "immutable" not in s3.head_object(Bucket=BUCKET, Key=report.file_name).get("CacheControl", "")
    link = staff_client.get(f"{URL}{report.id}").json()["download_url"].split("8000", 1)[1]
    download = staff_client.get(link)
    assert download.status_code == 200 and download["Content-Disposition"].startswith("attachment")
    assert b"".join(download.streaming_content).decode().splitlines()[0] == (
        "store,day,status,currency,orders,units,revenue"
    )
