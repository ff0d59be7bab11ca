"""Sentry (celeste/sentry.py): errors of workers and of the web reach a real Sentry
envelope endpoint on loopback (celeste/devserver/loopback.py's SentryReceiver) with
what identifies them (exception type, task name or URL), and without personal data."""

import threading
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import sentry_sdk
from django.core.handlers.wsgi import WSGIHandler
from django.db import connections
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from catalog.services import stock_level_set, store_update
from celeste.background.models import FailedTask
from celeste.sentry import scrub_personal_data, sentry_init
from integrations.odoo.tasks import odoo_sync_order
from orders import services as order_services

from .conftest import wait_for
from .factories import AddressFactory, ProductFactory, StoreFactory, UserFactory

EMAIL = "grace.hopper@example.com"
CLIENT_IP = "203.0.113.7"
SECRET_TOKEN = "Token 0123456789abcdef-secret"
# Whatever of these an event holds is personal data, or a credential.
NEVER_SENT = (EMAIL, "Hopper", CLIENT_IP, "0123456789abcdef", "Unter den Linden", "sessionid", "ip_address")


def assert_nothing_personal(receiver):
    bodies = receiver.bodies()
    for text in NEVER_SENT:
        assert text not in bodies, f"{text!r} was sent to Sentry"


def events_of(receiver, exception_type: str) -> list[dict]:
    return [
        event
        for event in receiver.items("event")
        if any(value.get("type") == exception_type for value in event.get("exception", {}).get("values", []))
    ]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_task_that_fails_for_good_reaches_sentry_once_with_its_name_and_nothing_personal(
    start_worker, sentry_receiver, odoo, odoo_configured, set_switch
):
    set_switch("catalog.embed_products", "off")  # products need no embeddings here (no model load)
    # A paid order whose customer has an email and a name, from a store and of a product Odoo knows…
    store = StoreFactory()
    store_update(store=store, odoo_location_id=odoo.state.add_location(store.code))
    product = ProductFactory(price=Decimal("3.00"))
    odoo.state.add_product(product.sku, product.name)
    stock_level_set(product=product, store=store, quantity=10)
    user = UserFactory(email=EMAIL, first_name="Grace", last_name="Hopper")
    order = order_services.order_place(user=user, store=store, address=AddressFactory(user=user), items=[(product, 1)])
    # …while Odoo answers 503 when the sync looks the customer up by email: both runs fail.
    odoo.fail_next(2, "503", model="res.partner")
    start_worker(
        SENTRY_DSN=sentry_receiver.dsn(),
        SENTRY_ENVIRONMENT="ci",
        SENTRY_RELEASE="celeste@test",
        **odoo.env(),
        ODOO_SYNC_MAX_ATTEMPTS="2",
        ODOO_CALL_RETRIES="0",
        ODOO_TIMEOUT_SECONDS="5",
    )

    order_services.order_mark_paid(order_id=order.id)

    wait_for(lambda: FailedTask.objects.filter(task_name=odoo_sync_order.name).exists(), message="the inbox")
    (event,) = wait_for(lambda: events_of(sentry_receiver, "OdooTransientError"), message="the Sentry event")
    # The failure that ran the retries out, once: the retry before it is not an error.
    assert event["level"] == "error"
    assert event["extra"]["celery-job"]["task_name"] == odoo_sync_order.name
    assert event["transaction"] == odoo_sync_order.name
    assert "503" in event["exception"]["values"][-1]["value"]
    assert (event["environment"], event["release"]) == ("ci", "celeste@test")
    assert event["extra"]["celery-job"]["kwargs"] == "[Filtered]"  # job arguments stay home
    assert "user" not in event
    for value in event["exception"]["values"]:
        for frame in value.get("stacktrace", {}).get("frames", []):
            assert "vars" not in frame, frame  # the partner lookup's locals hold the email
    assert_nothing_personal(sentry_receiver)
    assert not sentry_receiver.rejected


# --- the web: a view that raises -----------------------------------------------------


class ViewBroke(Exception):
    pass


@csrf_exempt
def broken_view(request):
    raise ViewBroke("the view broke")


urlpatterns = [path("broken/", broken_view)]


@pytest.fixture
def sentry_in_this_process(sentry_receiver):
    """Sentry initialised here, as the settings do with SENTRY_DSN set; switched off after the test
    (its integrations stay installed but do nothing without a client)."""
    sentry_init(dsn=sentry_receiver.dsn(), environment="test", release="", traces_sample_rate=0)
    yield sentry_receiver
    client = sentry_sdk.get_client()
    client.flush(timeout=5)
    client.close()
    sentry_sdk.get_global_scope().set_client(None)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def one_real_request(request: urllib.request.Request) -> int:
    """Serve ``request`` with Django's WSGI application (the one gunicorn runs, which
    Sentry's Django integration wraps) on a loopback port; returns the HTTP status."""
    httpd = make_server("127.0.0.1", 0, WSGIHandler(), handler_class=_QuietHandler)

    def serve():
        try:
            httpd.handle_request()
        finally:
            connections.close_all()  # this thread's connection, or the test database cannot be dropped
            httpd.server_close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    request.full_url = request.full_url.replace("PORT", str(httpd.server_address[1]))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    finally:
        thread.join(10)


@pytest.mark.urls(__name__)
@pytest.mark.django_db(transaction=True)
def test_a_view_that_raises_reaches_sentry_with_its_url_and_nothing_personal(client, sentry_in_this_process):
    receiver = sentry_in_this_process
    client.force_login(UserFactory(email=EMAIL, last_name="Hopper"))  # a real session
    request = urllib.request.Request(
        f"http://127.0.0.1:PORT/broken/?search={EMAIL}",
        data=urllib.parse.urlencode({"email": EMAIL, "line1": "Unter den Linden 1"}).encode(),
        headers={
            "Authorization": SECRET_TOKEN,
            "X-Forwarded-For": CLIENT_IP,
            "X-Real-IP": CLIENT_IP,
            "Cookie": f"sessionid={client.cookies['sessionid'].value}",
            "User-Agent": "celeste-test",
        },
        method="POST",
    )

    assert one_real_request(request) == 500
    sentry_sdk.flush(timeout=5)

    (event,) = wait_for(lambda: events_of(receiver, "ViewBroke"), timeout=10, message="the Sentry event")
    assert event["transaction"] == "/broken/"
    assert event["request"]["url"].endswith("/broken/") and event["request"]["method"] == "POST"
    assert event["request"]["headers"]["User-Agent"] == "celeste-test"
    assert not {"data", "cookies", "query_string", "env"} & set(event["request"])
    assert not {"authorization", "cookie", "x-forwarded-for", "x-real-ip"} & {
        name.lower() for name in event["request"]["headers"]
    }
    assert "user" not in event
    assert_nothing_personal(receiver)


def test_the_scrubber_drops_request_credentials_the_user_and_emails_anywhere():
    event = {
        "request": {
            "url": "http://shop/api/v1/orders/",
            "headers": {"Authorization": SECRET_TOKEN, "Cookie": "sessionid=x", "User-Agent": "curl"},
            "cookies": {"sessionid": "x"},
            "data": {"line1": "Unter den Linden 1"},
            "query_string": f"search={EMAIL}",
            "env": {"REMOTE_ADDR": CLIENT_IP},
        },
        "user": {"id": 7, "email": EMAIL, "ip_address": CLIENT_IP},
        "message": f"SMTP refused <{EMAIL}>",
        "breadcrumbs": {"values": [{"message": "task.failed", "data": {"error": f"550 {EMAIL} unknown"}}]},
    }

    scrubbed = scrub_personal_data(event)

    assert scrubbed["request"] == {"url": "http://shop/api/v1/orders/", "headers": {"User-Agent": "curl"}}
    assert "user" not in scrubbed
    assert scrubbed["message"] == "SMTP refused <[email]>"
    assert scrubbed["breadcrumbs"]["values"][0]["data"]["error"] == "550 [email] unknown"
