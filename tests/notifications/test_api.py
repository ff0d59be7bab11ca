"""Notification center, preferences, push subscriptions (unsubscribe links: test_unsubscribe.py)."""

import pytest
from rest_framework.test import APIClient

from notifications import services
from notifications.models import NotificationPreference, PushSubscription

from ..factories import UserFactory, place_order, reach

pytestmark = pytest.mark.django_db

CENTER = "/api/v1/notifications/"
SUBSCRIPTIONS = "/api/v1/push/subscriptions/"
P256DH = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
AUTH = "tBHItJI5svbpez7KI4CCXg"
# Endpoints are resolved when subscribing and the suite has no DNS: a public IP
# literal stands in for a push service's host name. Nothing is sent to it.
PUSH_SERVICE = "https://1.1.1.1"


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def user():
    return UserFactory()


def notify(user, status="paid"):
    order = place_order(user=user)
    return services.notification_dispatch_order_event(order_id=reach(order, status).id, status=status)


def test_the_center_lists_only_ones_own_notifications(user):
    mine = notify(user)
    notify(UserFactory())

    body = client_for(user).get(CENTER).json()

    assert [n["id"] for n in body["results"]] == [mine.id]
    assert body["results"][0]["read"] is False


def test_unread_filter_count_and_marking_read(user):
    first, second = notify(user), notify(user)
    client = client_for(user)

    assert client.get(f"{CENTER}unread-count/").json() == {"unread": 2}
    assert client.post(f"{CENTER}{first.id}/read/").json()["read"] is True
    assert [n["id"] for n in client.get(CENTER, {"unread": "true"}).json()["results"]] == [second.id]
    assert [n["id"] for n in client.get(CENTER, {"unread": "false"}).json()["results"]] == [first.id]
    assert client.post(f"{CENTER}read-all/").json() == {"marked": 1}
    assert client.get(f"{CENTER}unread-count/").json() == {"unread": 0}


def test_someone_elses_notification_is_a_404(user):
    theirs = notify(UserFactory())

    assert client_for(user).get(f"{CENTER}{theirs.id}/").status_code == 404
    assert client_for(user).post(f"{CENTER}{theirs.id}/read/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.read_at is None


def test_bad_unread_value_is_a_400(user):
    assert client_for(user).get(CENTER, {"unread": "perhaps"}).status_code == 400


def test_the_center_is_paginated(user):
    for _ in range(3):
        notify(user)

    body = client_for(user).get(CENTER, {"page_size": 2}).json()

    assert body["count"] == 3 and len(body["results"]) == 2


def test_the_center_needs_authentication():
    assert APIClient().get(CENTER).status_code == 401


def test_preferences_default_on_and_can_be_changed(user):
    client = client_for(user)
    assert client.get(f"{CENTER}preferences/").json() == [
        {"channel": "email", "enabled": True},
        {"channel": "push", "enabled": True},
        {"channel": "in_app", "enabled": True},
    ]

    response = client.put(f"{CENTER}preferences/", [{"channel": "email", "enabled": False}], format="json")

    assert {"channel": "email", "enabled": False} in response.json()
    assert not services.channel_enabled(user_id=user.id, channel="email")


def test_a_bad_preference_is_a_400_and_changes_nothing(user):
    response = client_for(user).put(
        f"{CENTER}preferences/",
        [{"channel": "email", "enabled": False}, {"channel": "fax", "enabled": True}],
        format="json",
    )

    assert response.status_code == 400
    assert not NotificationPreference.objects.exists()


def test_delivery_rates_are_staff_only(user):
    assert client_for(user).get(f"{CENTER}delivery-rates/").status_code == 403
    rates = client_for(UserFactory(is_staff=True)).get(f"{CENTER}delivery-rates/").json()
    assert set(rates) == {"email", "push", "in_app"}


def test_subscribe_and_unsubscribe_push(user):
    client = client_for(user)
    payload = {"endpoint": f"{PUSH_SERVICE}/send/abc", "keys": {"p256dh": P256DH, "auth": AUTH}}

    created = client.post(SUBSCRIPTIONS, payload, format="json")
    assert created.status_code == 201, created.content
    assert client.post(SUBSCRIPTIONS, payload, format="json").status_code == 201  # re-subscribing is fine
    assert PushSubscription.objects.count() == 1
    assert [s["endpoint"] for s in client.get(SUBSCRIPTIONS).json()["results"]] == [payload["endpoint"]]

    assert client.delete(f"{SUBSCRIPTIONS}{created.json()['id']}/").status_code == 204
    assert PushSubscription.objects.get().active is False
    assert client.get(SUBSCRIPTIONS).json()["count"] == 0


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"endpoint": "http://1.1.1.1/x", "keys": {"p256dh": P256DH, "auth": AUTH}}, "endpoint"),
        ({"endpoint": "not a url", "keys": {"p256dh": P256DH, "auth": AUTH}}, "endpoint"),
        ({"endpoint": f"{PUSH_SERVICE}/x", "keys": {"p256dh": "short", "auth": AUTH}}, "keys"),
        ({"endpoint": f"{PUSH_SERVICE}/x"}, "keys"),
    ],
)
def test_bad_subscriptions_are_a_400(user, payload, field):
    response = client_for(user).post(SUBSCRIPTIONS, payload, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert not PushSubscription.objects.exists()


def test_someone_elses_subscription_cannot_be_deleted(user):
    theirs = services.push_subscription_save(user=UserFactory(), endpoint=f"{PUSH_SERVICE}/1", p256dh=P256DH, auth=AUTH)

    assert client_for(user).delete(f"{SUBSCRIPTIONS}{theirs.id}/").status_code == 404
    assert PushSubscription.objects.get().active is True


def test_vapid_public_key(settings):
    settings.VAPID_PUBLIC_KEY = P256DH
    assert APIClient().get(f"{SUBSCRIPTIONS}vapid-public-key/").json() == {"public_key": P256DH}
    settings.VAPID_PUBLIC_KEY = ""
    assert APIClient().get(f"{SUBSCRIPTIONS}vapid-public-key/").status_code == 503


def test_delivery_rates_window(user):
    staff = client_for(UserFactory(is_staff=True))

    assert staff.get(f"{CENTER}delivery-rates/", {"hours": 24}).status_code == 200
    assert staff.get(f"{CENTER}delivery-rates/", {"hours": 0}).status_code == 400
    assert staff.get(f"{CENTER}delivery-rates/", {"hours": "day"}).status_code == 400


def test_generate_vapid_keys_prints_a_usable_pair(redis, push_receiver, settings):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("generate_vapid_keys", stdout=out)
    values = dict(line.split("=", 1) for line in out.getvalue().split())

    assert len(values["VAPID_PUBLIC_KEY"]) == 87 and len(values["VAPID_PRIVATE_KEY"]) == 43
    settings.VAPID_PRIVATE_KEY, settings.VAPID_PUBLIC_KEY = values["VAPID_PRIVATE_KEY"], values["VAPID_PUBLIC_KEY"]
    push_receiver.vapid_public_key = values["VAPID_PUBLIC_KEY"]
    user = UserFactory()
    client = push_receiver.new_client("k")
    services.push_subscription_save(user=user, endpoint=client.endpoint, p256dh=client.p256dh, auth=client.auth)
    notification = notify(user)

    assert services.delivery_send(delivery_id=notification.deliveries.get(channel="push").id) == "sent"
    assert push_receiver.rejected == []
