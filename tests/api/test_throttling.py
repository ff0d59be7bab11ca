"""API throttles: failed logins per IP and per username, writes per user, anonymous
reads per IP; 429 with Retry-After; the payment webhook is never throttled; a Redis
outage lets requests through. Counted in the real Redis (the Django cache), with low
rates set per test (the test settings' own rates are high, so the rest of the suite
is never throttled)."""

import json
import time

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from celeste.devserver import embedded
from orders.models import Address, Payment
from orders.payments import SIGNATURE_HEADER, signature_header

from ..factories import UserFactory, place_order

pytestmark = pytest.mark.django_db

TOKEN = "/api/v1/auth/token/"
PASSWORD = "secret-pass-123"  # UserFactory's
HIGH = "100000/min"


@pytest.fixture
def throttle_rates(settings, redis):
    """Set some throttle rates for this test, on an empty Redis (no counts from earlier
    tests). DRF copies the rates onto its throttle classes at import; ours read them per
    request, so changing the setting is enough."""

    def set_rates(**rates):
        current = settings.REST_FRAMEWORK
        settings.REST_FRAMEWORK = {
            **current,
            "DEFAULT_THROTTLE_RATES": {**current["DEFAULT_THROTTLE_RATES"], **rates},
        }

    return set_rates


def login(username, password, *, ip="127.0.0.1", **headers):
    client = APIClient(REMOTE_ADDR=ip)
    return client.post(TOKEN, {"username": username, "password": password}, format="json", headers=headers)


def assert_throttled(response):
    assert response.status_code == 429, response.content
    assert int(response["Retry-After"]) > 0
    assert "throttled" in response.json()["detail"]


def test_failed_logins_from_one_ip_are_throttled_with_retry_after(throttle_rates):
    throttle_rates(login_ip="5/min", login_username=HIGH)
    user = UserFactory()

    wrong = [login(f"guess{n}", "wrong").status_code for n in range(5)]

    assert wrong == [400] * 5
    assert_throttled(login(user.username, "wrong"))
    assert_throttled(login(user.username, PASSWORD))  # even the right password, until the window passes
    assert login(user.username, PASSWORD, ip="10.0.0.9").status_code == 200  # another address is not affected


def test_two_hundred_wrong_passwords_are_mostly_refused_with_429(throttle_rates):
    throttle_rates(login_ip="10/min", login_username="5/min")
    user = UserFactory()

    codes = [login(user.username, f"wrong-{n}").status_code for n in range(200)]

    assert codes[:5] == [400] * 5
    assert set(codes[5:]) == {429}


def test_failed_logins_for_one_username_are_throttled_whatever_the_ip(throttle_rates):
    throttle_rates(login_ip=HIGH, login_username="3/min")
    alice, bob = UserFactory(), UserFactory()

    wrong = [login(alice.username, "wrong", ip=f"10.0.0.{n}").status_code for n in range(3)]

    assert wrong == [400] * 3
    assert_throttled(login(alice.username, PASSWORD, ip="10.0.1.1"))
    assert login(bob.username, PASSWORD, ip="10.0.0.1").status_code == 200


def test_successful_logins_do_not_use_the_failure_budget(throttle_rates):
    throttle_rates(login_ip="2/min", login_username="2/min")
    user = UserFactory()

    assert [login(user.username, PASSWORD).status_code for _ in range(6)] == [200] * 6


def test_a_forged_x_forwarded_for_does_not_escape_the_ip_throttle(throttle_rates):
    throttle_rates(login_ip="3/min", login_username=HIGH)

    for n in range(3):
        login(f"guess{n}", "wrong", **{"X-Forwarded-For": f"203.0.113.{n}"})

    assert_throttled(login("guess", "wrong", **{"X-Forwarded-For": "203.0.113.99"}))


def address_payload():
    return {"recipient": "Ada", "line1": "Main 1", "city": "Berlin", "postal_code": "10117", "country": "DE"}


def test_writes_are_throttled_per_user_and_the_refused_write_stores_nothing(throttle_rates):
    throttle_rates(writes="3/min")
    user, other = UserFactory(), UserFactory()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")

    created = [client.post("/api/v1/addresses/", address_payload(), format="json").status_code for _ in range(3)]

    assert created == [201] * 3
    assert_throttled(client.post("/api/v1/addresses/", address_payload(), format="json"))
    assert Address.objects.filter(user=user).count() == 3
    assert client.get("/api/v1/addresses/").status_code == 200  # reads are not writes
    other_client = APIClient()
    other_client.force_authenticate(other)
    assert other_client.post("/api/v1/addresses/", address_payload(), format="json").status_code == 201


def test_anonymous_reads_are_throttled_per_ip_and_signed_in_reads_are_not(throttle_rates):
    throttle_rates(anon_reads="3/min")
    anonymous = APIClient()

    assert [anonymous.get("/api/v1/stores/").status_code for _ in range(3)] == [200] * 3
    assert_throttled(anonymous.get("/api/v1/stores/"))
    assert APIClient(REMOTE_ADDR="10.0.0.5").get("/api/v1/stores/").status_code == 200
    signed_in = APIClient()
    signed_in.force_authenticate(UserFactory())
    assert [signed_in.get("/api/v1/stores/").status_code for _ in range(5)] == [200] * 5


def test_the_payment_webhook_is_never_throttled(throttle_rates, settings):
    throttle_rates(login_ip="1/min", login_username="1/min", writes="1/min", anon_reads="1/min")
    settings.PAYMENT_WEBHOOK_SECRETS = ["whsec_test"]
    order = place_order()
    client = APIClient()

    def deliver(event_id, secret="whsec_test"):
        body = json.dumps(
            {
                "id": event_id,
                "type": "payment.succeeded",
                "data": {"order_number": order.number, "amount": str(order.total), "currency": order.currency},
            }
        ).encode()
        header = signature_header(body=body, secrets=[secret])
        return client.post(
            "/api/v1/payments/webhook", data=body, content_type="application/json", headers={SIGNATURE_HEADER: header}
        )

    forged = [deliver(f"evt_forged_{n}", secret="whsec_forged").status_code for n in range(5)]
    retries = [deliver("evt_1").status_code for _ in range(5)]  # the provider retrying one event

    assert forged == [401] * 5
    assert retries == [200] * 5
    assert Payment.objects.count() == 1


def test_throttles_let_requests_through_while_redis_is_down(throttle_rates, embedded_root):
    throttle_rates(login_ip="100/min", login_username="100/min", writes="100/min", anon_reads="100/min")
    user = UserFactory()
    signed_in = APIClient()
    signed_in.force_authenticate(user)
    embedded.stop_redis(embedded_root)
    try:
        started = time.monotonic()
        read = APIClient().get("/api/v1/stores/")
        wrong = login(user.username, "wrong")
        right = login(user.username, PASSWORD)
        write = signed_in.post("/api/v1/addresses/", address_payload(), format="json")
        elapsed = time.monotonic() - started
    finally:
        embedded.start_redis(embedded_root)

    assert (read.status_code, wrong.status_code, right.status_code, write.status_code) == (200, 400, 200, 201)
    assert elapsed < 10  # failing fast, not waiting out Redis retries
