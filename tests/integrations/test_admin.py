"""The Odoo pages of the admin: the connection's settings (never the key) and its test,
each step saying what worked and what failed; failed inventory pairs shown as failed."""

import pytest
from django.urls import reverse

from integrations.models import InventorySyncState, SyncStatus

from ..factories import ProductFactory, StoreFactory, UserFactory

pytestmark = pytest.mark.django_db

CONNECTION = "admin:integrations_odoo_connection"


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_the_connection_page_shows_the_settings_but_never_the_key(admin_client, odoo_settings):
    page = admin_client.get(reverse(CONNECTION)).content.decode()

    assert odoo_settings.ODOO_URL in page and odoo_settings.ODOO_USER in page and "set (hidden)" in page
    assert odoo_settings.ODOO_API_KEY not in page
    assert (
        reverse(CONNECTION) in admin_client.get(reverse("admin:integrations_odooorderlink_changelist")).content.decode()
    )


def test_testing_a_working_connection_says_each_step_worked(admin_client, odoo_settings):
    page = admin_client.post(reverse(CONNECTION)).content.decode()

    assert page.count("<td>worked</td>") == 3
    assert f"logged in to &#x27;{odoo_settings.ODOO_DB}&#x27;" in page
    assert odoo_settings.ODOO_API_KEY not in page


def test_a_refused_login_says_what_failed_and_what_was_not_tried(admin_client, odoo_settings, odoo):
    odoo.deny_access()

    page = admin_client.post(reverse(CONNECTION)).content.decode()

    assert "<td>reach the server</td><td>worked</td>" in page
    assert "<td>log in</td><td>failed</td>" in page and "refused" in page
    assert "<td>read stock locations</td><td>not tried</td>" in page


def test_an_unreachable_server_and_no_settings_are_failures_too(admin_client, settings):
    settings.ODOO_URL = ""
    assert "ODOO_URL is not set" in admin_client.post(reverse(CONNECTION)).content.decode()

    settings.ODOO_URL, settings.ODOO_DB, settings.ODOO_USER, settings.ODOO_API_KEY = "http://127.0.0.1:9", "d", "u", "k"
    settings.ODOO_TIMEOUT_SECONDS, settings.ODOO_CALL_RETRIES = 2, 0
    page = admin_client.post(reverse(CONNECTION)).content.decode()
    assert "<td>reach the server</td><td>failed</td>" in page


def test_a_pair_whose_push_failed_shows_as_failed_with_its_error(admin_client):
    state = InventorySyncState.objects.create(
        product=ProductFactory(), store=StoreFactory(), status=SyncStatus.PENDING, dirty=True, error="Fault: 503 busy"
    )

    page = admin_client.get(reverse("admin:integrations_inventorysyncstate_changelist")).content.decode()

    assert "failed, retrying: Fault: 503 busy" in page
    InventorySyncState.objects.filter(id=state.id).update(status=SyncStatus.FAILED, error="Fault: no such location")
    assert (
        "failed: Fault: no such location"
        in admin_client.get(reverse("admin:integrations_inventorysyncstate_changelist")).content.decode()
    )
