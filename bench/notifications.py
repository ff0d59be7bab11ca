"""Notifications: a 10,000-recipient campaign through one worker vs plain smtplib; status change → all deliveries p50.

The SMTP server is the loopback aiosmtpd server in its own process (so neither
client shares its GIL). The campaign runs on one real Celery worker
(concurrency 1) from "Send" to status "sent"; the baseline sends the same
rendered messages with smtplib over one connection from this process. Then,
with the worker, a push receiver and the SMTP server, each order's change to
"paid" is timed until its in-app, email and push deliveries are all sent.
"""

import smtplib
import subprocess
import sys
import time
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import connection
from django.test import override_settings

from bench import BASE_DIR, Result, p50, report
from celeste.devserver.loopback import PushReceiver, free_port
from celeste.devserver.processes import celery_worker
from notifications import services
from notifications.campaigns import campaign_message, campaign_start, campaign_template
from notifications.channels import vapid_key_pair
from notifications.models import Campaign, CampaignStatus, Delivery, DeliveryStatus
from orders import services as orders

LOG_DIR = BASE_DIR / "var" / "bench" / "logs"
BODY = "Hello {{ name }},\n\nOat milk is 20% off this week in every store.\n\nUnsubscribe: {{ unsubscribe_url }}\n"


def start_smtp_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "celeste.devserver.loopback", str(port)], cwd=BASE_DIR, stdout=subprocess.PIPE, text=True
    )
    assert "listening" in proc.stdout.readline()
    return proc


def stop_smtp_server(proc: subprocess.Popen) -> int:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return int(out.strip().rsplit(" ", 1)[-1])


def make_customers(count: int) -> list:
    User = get_user_model()
    stamp = time.time_ns()
    User.objects.bulk_create(
        [User(username=f"fan-{stamp}-{i}", email=f"fan{i}@example.com", first_name=f"Fan{i}") for i in range(count)],
        batch_size=2000,
    )
    return list(User.objects.filter(username__startswith=f"fan-{stamp}-").order_by("id"))


def reset() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE notifications_campaignrecipient, notifications_campaign, notifications_delivery,"
            " notifications_pushsubscription, notifications_notificationpreference,"
            " notifications_notification, notifications_streamevent, notifications_streamsequence,"
            " orders_payment, orders_orderitem, orders_order, orders_address"
            " RESTART IDENTITY CASCADE"
        )
        cursor.execute("DELETE FROM auth_user WHERE username LIKE 'fan-%%' OR username LIKE 'notify-%%'")


def run(quick: bool) -> list[Result]:
    recipients, status_changes = (1_000, 10) if quick else (10_000, 30)
    reset()
    port = free_port()
    smtp = start_smtp_server(port)
    private, public = vapid_key_pair()
    push = PushReceiver(vapid_public_key=public).start()
    env = {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(port),
        "VAPID_PRIVATE_KEY": private,
        "VAPID_PUBLIC_KEY": public,
        "NOTIFY_RATE_LIMIT_PER_HOUR": "100000",
        "LOG_LEVEL": "WARNING",
        "TASK_SWITCH_CACHE_SECONDS": "0",
        # The push receiver is on loopback over http: benchmarks only (celeste/egress.py).
        "PUSH_ALLOW_PRIVATE_HOSTS": "1",
    }
    try:
        users = make_customers(recipients)
        campaign = Campaign.objects.create(subject="Oat milk week", body=BODY)
        with celery_worker(queues="fast", concurrency=1, env=env, log_dir=LOG_DIR):
            start = time.perf_counter()
            campaign_start(campaign_id=campaign.id)
            while Campaign.objects.get(id=campaign.id).status != CampaignStatus.SENT:
                time.sleep(0.05)
            campaign_seconds = time.perf_counter() - start

            with override_settings(PUSH_ALLOW_PRIVATE_HOSTS=True):  # subscribing to the loopback receiver
                latencies = _status_change_latencies(status_changes, push, env)
        received_by_worker = stop_smtp_server(smtp)

        # Baseline: the same messages, pre-rendered, over one plain smtplib connection.
        smtp = start_smtp_server(port)
        template = campaign_template(campaign)
        messages = [(u.email, campaign_message(campaign, template, u).message().as_bytes()) for u in users]
        start = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", port) as client:
            for address, data in messages:
                client.sendmail("shop@example.com", [address], data)
        smtplib_seconds = time.perf_counter() - start
        received_by_smtplib = stop_smtp_server(smtp)
    finally:
        push.stop()
        if smtp.poll() is None:
            smtp.kill()
    assert received_by_worker >= recipients, f"the campaign delivered {received_by_worker}/{recipients}"
    reset()

    campaign_rate, smtplib_rate = recipients / campaign_seconds, recipients / smtplib_seconds
    return report(
        [
            Result("notifications", f"campaign, {recipients:,} recipients, one worker", campaign_rate, "msg/s"),
            Result(
                "notifications",
                f"plain smtplib, same {received_by_smtplib:,} messages, one connection",
                smtplib_rate,
                "msg/s",
            ),
            Result(
                "notifications", "messages the SMTP server got (campaign + order emails)", received_by_worker, "msgs"
            ),
            Result(
                "notifications",
                "campaign throughput ratio worker / smtplib",
                campaign_rate / smtplib_rate,
                "x",
                ">= 0.6",
            ),
            Result(
                "notifications",
                f"status change → in-app+email+push all sent, p50 (n={len(latencies)})",
                p50(latencies) * 1000,
                "ms",
            ),
        ]
    )


def _status_change_latencies(count: int, push: PushReceiver, env: dict) -> list[float]:
    from catalog import services as catalog

    User = get_user_model()
    store = catalog.store_create(code=f"notify-{time.time_ns()}", name="Notify Store")
    product = catalog.product_create(sku=f"NOTIFY-{time.time_ns()}", name="Oat Milk", price=Decimal("1.99"))
    catalog.stock_level_set(product=product, store=store, quantity=1_000_000)
    latencies = []
    for i in range(count):
        user = User.objects.create_user(username=f"notify-{time.time_ns()}", email=f"n{i}@example.com")
        client = push.new_client(f"n{i}")
        services.push_subscription_save(user=user, endpoint=client.endpoint, p256dh=client.p256dh, auth=client.auth)
        address = orders.address_create(user=user, recipient="N", line1="R 1", city="B", postal_code="1", country="DE")
        order = orders.order_place(user=user, store=store, address=address, items=[(product, 1)])
        start = time.perf_counter()
        orders.order_mark_paid(order_id=order.id)
        while Delivery.objects.filter(notification__order=order, status=DeliveryStatus.SENT).count() < 3:
            time.sleep(0.002)
        latencies.append(time.perf_counter() - start)
    return latencies
