"""Bulk email campaigns."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from celeste.background.models import OutboxMessage
from notifications import admin as notifications_admin
from notifications import services
from notifications.campaigns import (
    CampaignError,
    campaign_audience,
    campaign_create,
    campaign_fan_out,
    campaign_progress,
    campaign_send_chunk,
    campaign_start,
    campaign_update,
    campaigns_recover,
)
from notifications.models import Campaign, CampaignAudience, CampaignRecipient, CampaignStatus, Channel
from notifications.unsubscribe import unsubscribe_token
from orders.models import Order

from ..factories import StoreFactory, UserFactory, place_order, reach

pytestmark = pytest.mark.django_db

BODY = "Hello {{ name }}, oat milk is on sale. Unsubscribe: {{ unsubscribe_url }}"


def campaign(**fields) -> Campaign:
    return Campaign.objects.create(subject="Oat milk week", body=BODY, **fields)


def customers(count: int) -> list:
    return [UserFactory(email=f"c{i}@example.com", first_name=f"C{i}") for i in range(count)]


def chunks_enqueued() -> list[dict]:
    return [m.kwargs for m in OutboxMessage.objects.filter(task_name="notifications.campaign_send_chunk")]


def test_the_audience_is_every_opted_in_customer_with_an_email():
    keen, _ = customers(2)
    gone = UserFactory(email="gone@example.com")
    services.preference_set(user_id=gone.id, channel=Channel.EMAIL, enabled=False)
    UserFactory(email="")
    UserFactory(email="inactive@example.com", is_active=False)

    audience = set(campaign_audience(campaign()))

    assert keen.id in audience and gone.id not in audience
    assert len(audience) == 2


def test_a_store_audience_is_who_ordered_there_within_n_days():
    store, elsewhere = StoreFactory(), StoreFactory()
    recent, old, other = customers(3)
    place_order(user=recent, store=store)
    Order.objects.filter(id=place_order(user=old, store=store).id).update(
        created_at=timezone.now() - timedelta(days=40)
    )
    place_order(user=other, store=elsewhere)
    targeted = campaign(audience=CampaignAudience.STORES, ordered_within_days=30)
    targeted.stores.set([store])

    assert list(campaign_audience(targeted)) == [recent.id]


def test_the_fan_out_of_a_store_campaign_records_each_customer_once_and_why_some_get_nothing():
    from notifications.campaigns import EMAIL_OFF, NO_EMAIL

    store = StoreFactory()
    keen, twice, no_email, opted_out = customers(4)
    place_order(user=keen, store=store)
    place_order(user=twice, store=store)
    place_order(user=twice, store=store)  # two orders: still one recipient
    type(no_email).objects.filter(id=no_email.id).update(email="")
    place_order(user=no_email, store=store)
    place_order(user=opted_out, store=store)
    services.preference_set(user_id=opted_out.id, channel=Channel.EMAIL, enabled=False)
    place_order(user=UserFactory(), store=StoreFactory())  # another store's customer
    targeted = campaign(audience=CampaignAudience.STORES, ordered_within_days=30)
    targeted.stores.set([store])
    campaign_start(campaign_id=targeted.id)

    campaign_fan_out(campaign_id=targeted.id)
    campaign_fan_out(campaign_id=targeted.id)  # a second run adds nobody

    rows = CampaignRecipient.objects.filter(campaign=targeted).values_list("user_id", "status", "error")
    assert sorted(rows) == sorted(
        [
            (keen.id, "queued", ""),
            (twice.id, "queued", ""),
            (no_email.id, "skipped", NO_EMAIL),
            (opted_out.id, "skipped", EMAIL_OFF),
        ]
    )


def test_starting_fans_out_in_chunks(settings):
    settings.CAMPAIGN_CHUNK_SIZE = 2
    customers(5)
    draft = campaign()

    campaign_start(campaign_id=draft.id)
    campaign_fan_out(campaign_id=draft.id)

    assert [len(c["recipient_ids"]) for c in chunks_enqueued()] == [2, 2, 1]
    assert campaign_progress(draft.id)["queued"] == 5
    assert Campaign.objects.get(id=draft.id).status == CampaignStatus.SENDING


def test_a_campaign_starts_only_once():
    draft = campaign()
    campaign_start(campaign_id=draft.id)

    with pytest.raises(CampaignError, match="already sending"):
        campaign_start(campaign_id=draft.id)


def test_a_broken_template_cannot_start():
    broken = Campaign.objects.create(subject="x", body="Hello {% if %}")

    with pytest.raises(CampaignError, match="not a valid template"):
        campaign_start(campaign_id=broken.id)
    assert Campaign.objects.get(id=broken.id).status == CampaignStatus.DRAFT


def start_and_fan_out(draft):
    campaign_start(campaign_id=draft.id)
    campaign_fan_out(campaign_id=draft.id)
    return [c["recipient_ids"] for c in chunks_enqueued()]


def test_a_chunk_sends_personalised_mail_over_one_connection_and_finishes(redis, smtp_server, channels_env):
    people = customers(3)
    draft = campaign()
    (chunk,) = start_and_fan_out(draft)

    assert campaign_send_chunk(campaign_id=draft.id, recipient_ids=chunk) == {"sent": 3, "failed": 0, "skipped": 0}

    assert sorted(smtp_server.recipients()) == sorted(p.email for p in people)
    body = smtp_server.messages[0]["message"].get_payload(decode=True).decode()
    assert body.startswith("Hello C0, oat milk is on sale.")
    assert "/api/v1/notifications/unsubscribe?token=" in body
    assert smtp_server.messages[0]["message"]["List-Unsubscribe"].strip().startswith("<http")
    assert smtp_server.messages[0]["message"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert Campaign.objects.get(id=draft.id).status == CampaignStatus.SENT
    assert campaign_progress(draft.id)["sent"] == 3


def test_a_chunk_run_twice_emails_nobody_twice(redis, smtp_server, channels_env):
    customers(4)
    draft = campaign()
    (chunk,) = start_and_fan_out(draft)

    campaign_send_chunk(campaign_id=draft.id, recipient_ids=chunk)
    again = campaign_send_chunk(campaign_id=draft.id, recipient_ids=chunk)
    campaign_fan_out(campaign_id=draft.id)

    assert again == {"sent": 0, "failed": 0, "skipped": 0}
    assert len(smtp_server.recipients()) == 4


def test_a_chunk_sends_nothing_for_a_draft_nor_to_another_campaigns_recipients(redis, smtp_server, channels_env):
    customers(2)
    started = campaign()
    (chunk,) = start_and_fan_out(started)
    draft = campaign()

    # The ids come from a message: a draft is not sent, and recipients of another campaign are not this one's.
    assert campaign_send_chunk(campaign_id=draft.id, recipient_ids=chunk) == {"sent": 0, "failed": 0, "skipped": 0}
    other = campaign(status=CampaignStatus.SENDING)
    assert campaign_send_chunk(campaign_id=other.id, recipient_ids=chunk) == {"sent": 0, "failed": 0, "skipped": 0}

    assert smtp_server.recipients() == []
    assert set(CampaignRecipient.objects.values_list("status", flat=True)) == {"queued"}


def test_each_email_carries_a_message_id_made_from_its_recipient(redis, smtp_server, channels_env):
    customers(2)
    draft = campaign()
    (chunk,) = start_and_fan_out(draft)

    campaign_send_chunk(campaign_id=draft.id, recipient_ids=chunk)

    received = {m["to"][0]: m["message"]["Message-ID"] for m in smtp_server.messages}
    expected = {
        r.user.email: f"<campaign-{draft.id}-recipient-{r.id}@example.com>"
        for r in CampaignRecipient.objects.filter(campaign=draft).select_related("user")
    }
    assert received == expected


def test_someone_who_unsubscribes_after_the_fan_out_is_skipped(redis, smtp_server, channels_env):
    keen, leaving = customers(2)
    draft = campaign()
    (chunk,) = start_and_fan_out(draft)
    services.email_unsubscribe(token=unsubscribe_token(user=leaving))

    result = campaign_send_chunk(campaign_id=draft.id, recipient_ids=chunk)

    assert result == {"sent": 1, "failed": 0, "skipped": 1}
    assert smtp_server.recipients() == [keen.email]


def test_unsubscribed_customers_are_left_out_of_later_campaigns():
    keen, leaving = customers(2)
    services.email_unsubscribe(token=unsubscribe_token(user=leaving))

    assert list(campaign_audience(campaign())) == [keen.id]


def test_a_temporary_smtp_refusal_requeues_the_unsent_and_raises_for_a_retry(redis, smtp_server, channels_env):
    customers(3)
    draft = campaign()
    (chunk,) = start_and_fan_out(draft)
    smtp_server.fail_with = "451 4.3.0 Greylisted"

    with pytest.raises(Exception, match="451"):
        campaign_send_chunk(campaign_id=draft.id, recipient_ids=chunk)

    assert campaign_progress(draft.id)["queued"] == 3
    smtp_server.fail_with = None
    assert campaign_send_chunk(campaign_id=draft.id, recipient_ids=chunk)["sent"] == 3
    assert len(smtp_server.recipients()) == 3


def test_a_permanent_refusal_fails_only_that_recipient(redis, smtp_server, channels_env):
    customers(2)
    draft = campaign()
    (chunk,) = start_and_fan_out(draft)
    smtp_server.fail_with = "550 5.1.1 Unknown user"

    result = campaign_send_chunk(campaign_id=draft.id, recipient_ids=chunk)

    assert result == {"sent": 0, "failed": 2, "skipped": 0}
    assert "550" in CampaignRecipient.objects.first().error
    assert Campaign.objects.get(id=draft.id).status == CampaignStatus.SENT


def test_sending_is_throttled(settings, redis, smtp_server, channels_env):
    import time

    settings.CAMPAIGN_MAX_PER_SECOND = 20
    customers(6)
    draft = campaign()
    (chunk,) = start_and_fan_out(draft)

    started = time.monotonic()
    campaign_send_chunk(campaign_id=draft.id, recipient_ids=chunk)

    assert time.monotonic() - started >= 5 / 20


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True, email="staff@example.com"))
    return client


def test_admin_send_a_test_to_me(admin_client, redis, smtp_server, channels_env):
    draft = campaign()

    admin_client.post(
        reverse("admin:notifications_campaign_changelist"),
        {"action": "send_test_to_me", "_selected_action": [draft.id]},
    )

    assert smtp_server.recipients() == ["staff@example.com"]
    assert not CampaignRecipient.objects.exists()


def test_admin_send_asks_first_saying_who_gets_it_and_who_is_left_out(admin_client):
    customers(2)
    UserFactory(email="")
    services.preference_set(user_id=UserFactory(email="gone@example.com").id, channel=Channel.EMAIL, enabled=False)
    draft = campaign()
    send = {"action": "send", "_selected_action": [draft.id]}

    page = admin_client.post(reverse("admin:notifications_campaign_changelist"), send).content.decode()

    # The staff user counts too: 2 customers + staff@example.com.
    assert "Oat milk week: 3 recipient(s)" in page
    assert "1 left out: No email address." in page and "1 left out: Email turned off (unsubscribed)." in page
    assert Campaign.objects.get(id=draft.id).status == CampaignStatus.DRAFT
    assert not OutboxMessage.objects.exists()


def test_admin_send_starts_the_campaign_once_confirmed_and_shows_progress(admin_client):
    customers(2)
    UserFactory(email="")
    draft = campaign()

    admin_client.post(
        reverse("admin:notifications_campaign_changelist"),
        {"action": "send", "_selected_action": [draft.id], "confirmed": "yes"},
    )
    campaign_fan_out(campaign_id=draft.id)
    listing = admin_client.get(reverse("admin:notifications_campaign_changelist")).content.decode()
    page = admin_client.get(reverse("admin:notifications_campaign_change", args=[draft.id])).content.decode()

    assert Campaign.objects.get(id=draft.id).status == CampaignStatus.SENDING
    assert "Sending" in listing
    # The user without an email is a skipped recipient; the page reloads itself while sending.
    assert "25.0% done of 4: queued 3, sent 0, failed 0, skipped 1" in page
    assert '<meta http-equiv="refresh" content="5">' in page
    assert CampaignRecipient.objects.get(user__email="").error == "No email address."


def test_the_send_button_on_a_draft_asks_first_then_starts_it(admin_client):
    customers(1)
    draft = campaign()
    url = reverse("admin:notifications_campaign_send", args=[draft.id])

    assert (
        'id="campaign-send"'
        in admin_client.get(reverse("admin:notifications_campaign_change", args=[draft.id])).content.decode()
    )
    assert admin_client.get(url).status_code == 405
    assert "recipient(s)" in admin_client.post(url).content.decode()
    assert Campaign.objects.get(id=draft.id).status == CampaignStatus.DRAFT
    assert admin_client.post(url, {"confirmed": "yes"}).status_code == 302
    assert Campaign.objects.get(id=draft.id).status == CampaignStatus.SENDING
    # Sent once: a second confirmation changes nothing and says so.
    admin_client.post(url, {"confirmed": "yes"})
    assert OutboxMessage.objects.filter(task_name="notifications.campaign_fan_out").count() == 1


def test_progress_has_percent_rate_and_an_estimated_finish():
    from notifications.campaigns import campaign_progress_report

    users = customers(4)
    started = campaign(status=CampaignStatus.SENDING, started_at=timezone.now() - timedelta(minutes=2))
    for user, status in zip(users, ["sent", "sent", "queued", "queued"], strict=True):
        CampaignRecipient.objects.create(campaign=started, user=user, status=status)

    report = campaign_progress_report(started, now=started.started_at + timedelta(minutes=2))

    assert (report["percent"], report["per_minute"], report["queued"]) == (50.0, 1.0, 2)
    assert report["finish_at"] == started.started_at + timedelta(minutes=4)


def test_a_started_campaign_cannot_be_deleted_a_draft_can(admin_client):
    started, draft = campaign(status=CampaignStatus.SENDING), campaign()

    assert admin_client.post(reverse("admin:notifications_campaign_delete", args=[started.id])).status_code == 403
    actions = admin_client.get(reverse("admin:notifications_campaign_changelist")).content.decode()
    assert "delete_selected" not in actions
    admin_client.post(reverse("admin:notifications_campaign_delete", args=[draft.id]), {"post": "yes"})
    assert list(Campaign.objects.values_list("id", flat=True)) == [started.id]


def test_adding_a_campaign_in_the_admin_goes_through_the_service(admin_client, monkeypatch):
    made = []
    monkeypatch.setattr(notifications_admin, "campaign_create", lambda **kw: made.append(kw) or campaign_create(**kw))
    store = StoreFactory()

    response = admin_client.post(
        reverse("admin:notifications_campaign_add"),
        {
            "subject": "Oat milk week",
            "body": BODY,
            "audience": "stores",
            "stores": [store.id],
            "ordered_within_days": 7,
        },
    )

    assert response.status_code == 302, response.content[:3000]
    saved = Campaign.objects.get()
    assert (saved.audience, list(saved.stores.all()), saved.status) == ("stores", [store], CampaignStatus.DRAFT)
    assert saved.created_by.email == "staff@example.com"
    assert len(made) == 1


def test_editing_a_draft_in_the_admin_goes_through_the_service(admin_client, monkeypatch):
    edited = []
    monkeypatch.setattr(notifications_admin, "campaign_update", lambda **kw: edited.append(kw) or campaign_update(**kw))
    draft = campaign()

    response = admin_client.post(
        reverse("admin:notifications_campaign_change", args=[draft.id]),
        {"subject": "Oat milk month", "body": BODY, "audience": "all", "ordered_within_days": 30},
    )

    assert response.status_code == 302, response.content[:3000]
    assert Campaign.objects.get(id=draft.id).subject == "Oat milk month"
    assert len(edited) == 1


def test_saving_a_started_campaign_in_the_admin_changes_nothing(admin_client):
    started = campaign(status=CampaignStatus.SENDING)

    response = admin_client.post(reverse("admin:notifications_campaign_change", args=[started.id]), {})

    assert response.status_code == 302, response.content[:3000]
    assert Campaign.objects.filter(id=started.id, subject="Oat milk week", status=CampaignStatus.SENDING).exists()


def test_a_campaign_that_has_started_cannot_be_changed():
    started = campaign(status=CampaignStatus.SENDING)

    with pytest.raises(CampaignError, match="cannot be changed"):
        campaign_update(campaign=started, subject="Something else")

    assert Campaign.objects.get(id=started.id).subject == "Oat milk week"


def test_admin_refuses_a_broken_template(admin_client):
    response = admin_client.post(
        reverse("admin:notifications_campaign_add"),
        {"subject": "x", "body": "{% for %}", "audience": "all", "ordered_within_days": 30},
    )

    assert response.status_code == 200
    assert "not a valid template" in response.content.decode()
    assert not Campaign.objects.exists()


@pytest.mark.parametrize(
    "name", ["notification", "delivery", "notificationpreference", "pushsubscription", "campaign", "campaignrecipient"]
)
def test_notification_admin_pages_load(admin_client, name):
    notify = services.notification_dispatch_order_event(order_id=reach(place_order(), "paid").id, status="paid")
    assert notify is not None

    assert admin_client.get(reverse(f"admin:notifications_{name}_changelist")).status_code == 200


def test_recipients_stuck_by_a_killed_worker_are_failed_and_the_campaign_finishes():
    customers(2)
    draft = campaign()
    start_and_fan_out(draft)
    CampaignRecipient.objects.update(status="sending", updated_at=timezone.now() - timedelta(minutes=20))

    assert campaigns_recover() == 2

    assert campaign_progress(draft.id)["failed"] == 2
    assert Campaign.objects.get(id=draft.id).status == CampaignStatus.SENT


def test_recipients_being_sent_right_now_are_left_alone():
    customers(1)
    draft = campaign()
    start_and_fan_out(draft)
    CampaignRecipient.objects.update(status="sending")

    assert campaigns_recover() == 0


def test_plain_text_bodies_are_not_html_escaped(redis, smtp_server, channels_env):
    UserFactory(email="obrien@example.com", first_name="O'Brien & Co")
    draft = Campaign.objects.create(subject="Hi", body="Dear {{ name }}")
    (chunk,) = start_and_fan_out(draft)

    campaign_send_chunk(campaign_id=draft.id, recipient_ids=chunk)

    assert smtp_server.messages[0]["message"].get_payload(decode=True).decode().strip() == "Dear O'Brien & Co"


def test_non_ascii_subject_and_body_arrive_intact(redis, smtp_server, channels_env):
    from email.header import decode_header, make_header

    UserFactory(email="zoe@example.com", first_name="Zoë")
    draft = Campaign.objects.create(subject="Café week — 20 % off", body="Grüße, {{ name }}!")
    (chunk,) = start_and_fan_out(draft)

    campaign_send_chunk(campaign_id=draft.id, recipient_ids=chunk)

    message = smtp_server.messages[0]["message"]
    assert str(make_header(decode_header(message["Subject"]))) == "Café week — 20 % off"
    assert message.get_payload(decode=True).decode("utf-8").strip() == "Grüße, Zoë!"
    assert message["Message-ID"] and message["Date"] and message["To"] == "zoe@example.com"


def test_every_line_of_a_campaign_email_ends_in_crlf_and_a_leading_dot_survives(redis, smtp_server, channels_env):
    # Strict servers refuse a bare LF in DATA (SMTP smuggling); a line starting with "." must be
    # dot-stuffed, or the server reads it as the end of the message.
    UserFactory(email="dot@example.com", first_name="Dot")
    subject = "A long subject that the header encoder must fold over more than one line " * 2
    draft = Campaign.objects.create(subject=subject, body="Hi {{ name }},\n.\n..two dots\r\nend\n")
    (chunk,) = start_and_fan_out(draft)

    campaign_send_chunk(campaign_id=draft.id, recipient_ids=chunk)

    (message,) = smtp_server.messages
    assert b"\n" not in message["raw"].replace(b"\r\n", b"")
    assert message["message"].get_payload(decode=True).decode() == "Hi Dot,\r\n.\r\n..two dots\r\nend\r\n"


def test_a_non_smtp_backend_gets_ordinary_messages(settings, redis):
    from django.core import mail

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    customers(2)
    draft = campaign()
    (chunk,) = start_and_fan_out(draft)

    assert campaign_send_chunk(campaign_id=draft.id, recipient_ids=chunk)["sent"] == 2
    assert sorted(m.to[0] for m in mail.outbox) == ["c0@example.com", "c1@example.com"]
    assert mail.outbox[0].extra_headers["List-Unsubscribe"].startswith("<http")
    assert mail.outbox[0].extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    first = CampaignRecipient.objects.filter(campaign=draft).order_by("id").first()
    assert mail.outbox[0].message()["Message-ID"] == f"<campaign-{draft.id}-recipient-{first.id}@example.com>"


def test_the_pace_is_global_across_senders(settings, redis):
    """Two chunk tasks on two workers share one schedule: together they send at the rate."""
    import threading
    import time

    from notifications.ratelimit import CampaignPace

    sent_at: list[float] = []

    def worker():
        pace = CampaignPace(20)
        for _ in range(5):
            pace.wait()
            sent_at.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # 10 sends at 20/s take at least 9 intervals (each sender alone would be done after 4)
    assert max(sent_at) - started >= 9 / 20 - 0.01


def test_the_pace_reserves_its_slots_in_batches_and_still_keeps_the_rate(redis):
    """At 200/s a sender takes a tenth of a second of slots (20) per Redis round trip."""
    import time

    from notifications.ratelimit import CampaignPace

    def evals() -> int:
        return redis.info("commandstats").get("cmdstat_eval", {}).get("calls", 0)

    before, started = evals(), time.monotonic()
    pace = CampaignPace(200)
    for _ in range(40):
        pace.wait()

    assert evals() - before == 2
    assert time.monotonic() - started >= 39 / 200 - 0.01
