"""Web Push security (issue 11): endpoints only on public https push services,
checked when subscribing and again when sending, no redirects followed; keys
that are a real P-256 point and 16-byte secret; no subscription takeover.

Endpoints are resolved when subscribing and the suite has no DNS: public IP
literals stand in for push services' host names (nothing is sent to them)."""

import pytest
from rest_framework.test import APIClient

from celeste.devserver.loopback import PushClient, b64url
from notifications import services
from notifications.models import PushSubscription

from ..factories import UserFactory, place_order, reach

pytestmark = pytest.mark.django_db

SUBSCRIPTIONS = "/api/v1/push/subscriptions/"
PUSH_SERVICE = "https://1.1.1.1"


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def keys(client: PushClient | None = None) -> dict:
    client = client or PushClient(endpoint="")
    return {"p256dh": client.p256dh, "auth": client.auth}


def push_delivery(user):
    notification = services.notification_dispatch_order_event(
        order_id=reach(place_order(user=user), "paid").id, status="paid"
    )
    return notification.deliveries.get(channel="push")


@pytest.fixture
def private_hosts_off(settings):
    """What production runs with; the refusals below are proven with it."""
    settings.PUSH_ALLOW_PRIVATE_HOSTS = False
    settings.PUSH_ALLOWED_HOSTS = []


# --- subscribing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://127.0.0.1:8443/push/abc",
        "https://localhost/push/abc",
        "https://[::1]/push/abc",
        "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://10.0.0.5/push/abc",
        "https://192.168.1.10/push/abc",
        "https://[::ffff:127.0.0.1]/push/abc",
        "https://[fd00::1]/push/abc",
        "https://0.0.0.0/push/abc",
        "https://user:password@1.1.1.1/push/abc",
        "http://1.1.1.1/push/abc",
        "https://push.celeste.invalid/push/abc",  # does not resolve
    ],
)
def test_subscribing_an_endpoint_that_is_no_public_https_push_service_is_a_400(private_hosts_off, endpoint):
    response = client_for(UserFactory()).post(SUBSCRIPTIONS, {"endpoint": endpoint, "keys": keys()}, format="json")

    assert response.status_code == 400, response.content
    assert list(response.json()) == ["endpoint"]
    assert not PushSubscription.objects.exists()


def test_the_refusal_says_why(private_hosts_off):
    client = client_for(UserFactory())

    def error(endpoint):
        return client.post(SUBSCRIPTIONS, {"endpoint": endpoint, "keys": keys()}, format="json").json()["endpoint"][0]

    assert "127.0.0.1, which is not a public address" in error("https://localhost/push")
    assert "user name or password" in error("https://u:p@1.1.1.1/push")
    assert "must use https" in error("http://1.1.1.1/push")


def test_the_allow_list_limits_subscriptions_to_the_listed_push_services(private_hosts_off, settings):
    client = client_for(UserFactory())
    settings.PUSH_ALLOWED_HOSTS = ["fcm.googleapis.com", "*.push.services.mozilla.com"]

    refused = client.post(SUBSCRIPTIONS, {"endpoint": f"{PUSH_SERVICE}/x", "keys": keys()}, format="json")
    assert refused.status_code == 400
    assert "not an allowed push service" in refused.json()["endpoint"][0]
    assert not PushSubscription.objects.exists()

    settings.PUSH_ALLOWED_HOSTS = ["fcm.googleapis.com", "1.1.1.1"]
    assert (
        client.post(SUBSCRIPTIONS, {"endpoint": f"{PUSH_SERVICE}/x", "keys": keys()}, format="json").status_code == 201
    )


def test_a_public_https_endpoint_is_accepted(private_hosts_off):
    response = client_for(UserFactory()).post(
        SUBSCRIPTIONS, {"endpoint": f"{PUSH_SERVICE}/send/abc", "keys": keys()}, format="json"
    )

    assert response.status_code == 201, response.content
    assert PushSubscription.objects.get().endpoint == f"{PUSH_SERVICE}/send/abc"


OFF_CURVE = b64url(b"\x04" + b"\x00" * 64)  # the right shape, but (0, 0) is no point of P-256
COMPRESSED = b64url(b"\x02" + b"\x11" * 32)
GOOD = keys()


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ({"p256dh": OFF_CURVE}, "p256dh"),
        ({"p256dh": COMPRESSED}, "p256dh"),
        ({"p256dh": GOOD["p256dh"][:-4]}, "p256dh"),  # truncated
        ({"p256dh": GOOD["p256dh"].replace("_", "/").replace("-", "+") + "*"}, "p256dh"),  # not base64url
        ({"auth": b64url(b"\x01" * 15)}, "auth"),
        ({"auth": b64url(b"\x01" * 17)}, "auth"),
        ({"auth": "!!!!!!!!!!!!!!!!!!!!!!"}, "auth"),
    ],
)
def test_push_keys_must_be_a_p256_point_and_a_16_byte_secret(private_hosts_off, key, field):
    payload = {"endpoint": f"{PUSH_SERVICE}/x", "keys": {**GOOD, **key}}

    response = client_for(UserFactory()).post(SUBSCRIPTIONS, payload, format="json")

    assert response.status_code == 400, response.content
    assert list(response.json()) == ["keys"]
    assert list(response.json()["keys"]) == [field]
    assert not PushSubscription.objects.exists()


def test_with_private_hosts_allowed_development_may_subscribe_a_loopback_receiver(settings):
    settings.PUSH_ALLOW_PRIVATE_HOSTS = True

    response = client_for(UserFactory()).post(
        SUBSCRIPTIONS, {"endpoint": "http://127.0.0.1:9/push/dev", "keys": keys()}, format="json"
    )

    assert response.status_code == 201, response.content


# --- takeover -------------------------------------------------------------------------


def test_another_user_registering_the_same_endpoint_does_not_take_it_over(private_hosts_off):
    alice, mallory = UserFactory(), UserFactory()
    endpoint = f"{PUSH_SERVICE}/send/alices-browser"
    alices_keys, mallorys_keys = keys(), keys()
    assert (
        client_for(alice).post(SUBSCRIPTIONS, {"endpoint": endpoint, "keys": alices_keys}, format="json").status_code
        == 201
    )

    response = client_for(mallory).post(SUBSCRIPTIONS, {"endpoint": endpoint, "keys": mallorys_keys}, format="json")

    assert response.status_code == 201
    alices = PushSubscription.objects.get(user=alice)
    assert (alices.endpoint, alices.p256dh, alices.auth, alices.active) == (
        endpoint,
        alices_keys["p256dh"],
        alices_keys["auth"],
        True,
    )
    assert PushSubscription.objects.get(user=mallory).p256dh == mallorys_keys["p256dh"]
    assert [s["endpoint"] for s in client_for(alice).get(SUBSCRIPTIONS).json()["results"]] == [endpoint]


# --- sending ------------------------------------------------------------------------


def subscribe(receiver, user, name):
    client = receiver.new_client(name)
    return services.push_subscription_save(user=user, endpoint=client.endpoint, p256dh=client.p256dh, auth=client.auth)


def test_the_endpoint_is_checked_again_when_sending(redis, push_receiver, channels_env, settings):
    # Stored while loopback was allowed: as if its name pointed at a public address then
    # and at 127.0.0.1 now (DNS changes between subscribing and sending).
    user = UserFactory()
    subscription = subscribe(push_receiver, user, "phone")
    delivery = push_delivery(user)
    settings.PUSH_ALLOW_PRIVATE_HOSTS = False

    assert services.delivery_send(delivery_id=delivery.id) == "failed"

    assert push_receiver.requests == []
    subscription.refresh_from_db()
    assert subscription.active is False
    # The loopback receiver speaks plain http, which is refused first (https only).
    assert subscription.last_error == "Push endpoint refused: The URL must use https."


def test_a_push_service_no_longer_on_the_allow_list_is_not_called(redis, push_receiver, channels_env, settings):
    user = UserFactory()
    subscription = subscribe(push_receiver, user, "phone")
    settings.PUSH_ALLOWED_HOSTS = ["fcm.googleapis.com"]

    assert services.delivery_send(delivery_id=push_delivery(user).id) == "failed"

    assert push_receiver.requests == []
    subscription.refresh_from_db()
    assert subscription.active is False
    assert "not an allowed push service" in subscription.last_error


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_from_the_push_service_is_not_followed(redis, push_receiver, channels_env, status):
    user = UserFactory()
    subscribe(push_receiver, user, "phone")
    push_receiver.status["phone"] = status
    push_receiver.redirect["phone"] = f"{push_receiver.origin}/internal/admin"
    delivery = push_delivery(user)

    assert services.delivery_send(delivery_id=delivery.id) == "failed"  # permanent: never retried

    assert push_receiver.requests == [("POST", "/push/phone")]
    delivery.refresh_from_db()
    assert "redirects are not followed" in delivery.last_error
    assert f"{status}" in delivery.last_error


@pytest.mark.parametrize(("field", "value"), [("p256dh", OFF_CURVE), ("p256dh", "not*base64"), ("auth", "not*base64")])
def test_keys_the_push_library_refuses_fail_the_delivery_and_deactivate_the_subscription(
    redis, push_receiver, channels_env, field, value
):
    # A row stored before keys were checked (the service refuses such keys now).
    user = UserFactory()
    good = subscribe(push_receiver, user, "phone")
    PushSubscription.objects.filter(id=good.id).update(**{field: value})
    delivery = push_delivery(user)

    assert services.delivery_send(delivery_id=delivery.id) == "failed"  # not retried

    good.refresh_from_db()
    assert good.active is False
    assert "refused the subscription" in good.last_error
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 1
