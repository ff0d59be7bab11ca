"""Unsubscribe links (issue 11): a dedicated signing key, tokens bound to the
user's current email, GET confirms and changes nothing, POST (the form or a mail
client's RFC 8058 one-click) unsubscribes, and no page shows the address."""

import json

import pytest
from django.core import signing
from django.test import Client

from notifications import services
from notifications.models import Channel, NotificationPreference
from notifications.unsubscribe import SALT, unsubscribe_headers, unsubscribe_token, unsubscribe_url

from ..factories import UserFactory, place_order, reach

pytestmark = pytest.mark.django_db

PATH = "/api/v1/notifications/unsubscribe"
EMAIL = "ada.lovelace@example.com"
USERNAME = "ada-lovelace-1815"


@pytest.fixture
def user():
    return UserFactory(email=EMAIL, username=USERNAME)


def email_on(user) -> bool:
    return services.channel_enabled(user_id=user.id, channel=Channel.EMAIL)


def browser():
    # enforce_csrf_checks: the one-click POST of a mail client carries no CSRF token.
    return Client(enforce_csrf_checks=True)


def assert_no_address(response):
    body = response.content.decode()
    assert EMAIL not in body and "lovelace" not in body and USERNAME not in body


def test_get_shows_a_confirmation_form_and_changes_nothing(user):
    response = browser().get(PATH, {"token": unsubscribe_token(user=user)})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b'<form method="post"' in response.content
    assert response["Cache-Control"] == "no-store" and response["Referrer-Policy"] == "no-referrer"
    assert email_on(user)
    assert not NotificationPreference.objects.exists()
    assert_no_address(response)


def test_posting_the_confirmation_form_unsubscribes(user):
    url = unsubscribe_url(user=user).split("8000", 1)[1]  # PUBLIC_BASE_URL is http://127.0.0.1:8000
    client = browser()
    form_action = client.get(url).content.decode().split('action="', 1)[1].split('"', 1)[0]

    response = client.post(form_action.replace("&amp;", "&"))

    assert response.status_code == 200
    assert b"You are unsubscribed" in response.content
    assert not email_on(user)
    assert_no_address(response)


def test_a_mail_clients_one_click_post_unsubscribes(user):
    """RFC 8058: POST of List-Unsubscribe=One-Click to the List-Unsubscribe URL, no cookies."""
    url = unsubscribe_headers(user=user)["List-Unsubscribe"].strip("<>").split("8000", 1)[1]

    response = browser().post(url, "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 200
    assert not email_on(user)
    assert_no_address(response)


def test_the_link_works_with_a_trailing_slash(user):
    assert browser().post(f"{PATH}/?token={unsubscribe_token(user=user)}").status_code == 200
    assert not email_on(user)


def forged_with_the_secret_key(user):
    """What the old links were: the user id signed with SECRET_KEY alone."""
    return signing.dumps({"u": user.id}, salt="notifications.unsubscribe")


def forged_with_the_secret_key_and_new_salt(user):
    return signing.dumps({"u": user.id, "e": "0" * 32}, salt=SALT)


def with_user_id_swapped(user):
    """Another user's token, its payload changed to name this user (signature kept)."""
    payload, signature = unsubscribe_token(user=UserFactory()).split(":", 1)
    data = json.loads(signing.b64_decode(payload.encode()))
    data["u"] = user.id
    return signing.b64_encode(json.dumps(data, separators=(",", ":")).encode()).decode() + ":" + signature


@pytest.mark.parametrize(
    "tamper",
    [
        lambda user, token: token[:-2] + ("xx" if not token.endswith("xx") else "yy"),
        lambda user, token: "",
        lambda user, token: token.replace(":", "!"),
        lambda user, token: forged_with_the_secret_key(user),
        lambda user, token: forged_with_the_secret_key_and_new_salt(user),
        lambda user, token: with_user_id_swapped(user),
    ],
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_forged_or_altered_token_is_a_400_and_changes_nothing(user, tamper, method):
    token = tamper(user, unsubscribe_token(user=user))

    response = getattr(browser(), method)(f"{PATH}?token={token}")

    assert response.status_code == 400
    assert b"token" in response.content
    assert email_on(user)
    assert not NotificationPreference.objects.exists()
    assert_no_address(response)


def test_a_token_for_an_old_email_stops_working_when_the_email_changes(user):
    old_token = unsubscribe_token(user=user)
    user.email = "ada@new.example.com"
    user.save()

    assert browser().get(PATH, {"token": old_token}).status_code == 400
    assert browser().post(f"{PATH}?token={old_token}").status_code == 400
    assert email_on(user)
    assert browser().post(f"{PATH}?token={unsubscribe_token(user=user)}").status_code == 200
    assert not email_on(user)


def test_the_token_is_signed_with_the_unsubscribe_key_not_the_secret_key(user, settings):
    token = unsubscribe_token(user=user)

    with pytest.raises(signing.BadSignature):
        signing.loads(token, salt=SALT)  # SECRET_KEY alone does not verify it
    settings.UNSUBSCRIBE_SIGNING_KEY = "another-key"
    assert browser().post(f"{PATH}?token={token}").status_code == 400
    assert email_on(user)


def test_the_token_does_not_carry_the_address(user):
    token = unsubscribe_token(user=user)

    assert "lovelace" not in signing.b64_decode(token.split(":", 1)[0].encode()).decode()


def test_order_emails_carry_one_click_unsubscribe_headers(user, redis, smtp_server, channels_env):
    notification = services.notification_dispatch_order_event(
        order_id=reach(place_order(user=user), "paid").id, status="paid"
    )

    assert services.delivery_send(delivery_id=notification.deliveries.get(channel="email").id) == "sent"

    (message,) = [m["message"] for m in smtp_server.messages]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = "".join(message["List-Unsubscribe"].split()).strip("<>")  # a long header is folded
    assert link.startswith("http://127.0.0.1:8000/api/v1/notifications/unsubscribe?token=")
    assert (
        browser()
        .post(link.split("8000", 1)[1], "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded")
        .status_code
        == 200
    )
    assert not email_on(user)
