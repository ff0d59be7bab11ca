"""Scale-out: three worker processes with distinct node names (``-n w1@%h`` …) on one Postgres
and one Redis, as three hosts would run them.

The work is a campaign to an SMTP server that takes 100 ms to accept each message (a remote
server's latency): a worker mostly waits on the wire, so three workers send about three times as
much as one even on two cores, until the global campaign pace (CAMPAIGN_MAX_PER_SECOND, one
schedule in Redis) stops them. One worker without a pace sends a first campaign; three workers
then send the next with the pace at twice that rate, between what one and what three can send, so
the one campaign shows both: throughput grows with workers, and the three together keep to the
pace (measured from the SMTP server's arrival times, not from what the workers believe).

Then a burst of paid orders and stock changes goes through the three workers, and everything that
must happen once happened once: every campaign email (by its Message-ID at the SMTP server), every
notification and order email, every Odoo sale order, and the Odoo quantity writes (at the fake
Odoo: never more than the changes, the final quantities exact).
"""

import re
import time

import pytest
from django.contrib.auth import get_user_model

from celeste.background.limits import slots_held
from celeste.celery import app
from celeste.devserver.processes import celery_workers
from notifications import tasks
from notifications.campaigns import campaign_create, campaign_start, recipient_message_id
from notifications.models import Campaign, CampaignRecipient, CampaignStatus
from notifications.models import RecipientStatus as Status

from ..conftest import LOG_DIR, WORKER_ENV, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

SMTP_DELAY_SECONDS = 0.1  # one worker: at most 10 emails/s
SCALE_ENV = {
    "CAMPAIGN_CHUNK_SIZE": "10",
    "CAMPAIGN_MAX_CONCURRENT_CHUNKS": "3",  # one chunk per worker at once
    # A pair pushed and then changed again waits its turn (default 300 s): the burst below must
    # end within the minute it is given, whether or not a push happens between two changes.
    "ODOO_INVENTORY_DEBOUNCE_SECONDS": "1",
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "console",
}
BODY = "Hello {{ name }},\n\nOat milk is 20% off this week.\n\nUnsubscribe: {{ unsubscribe_url }}\n"


def customers(tag: str, count: int) -> None:
    User = get_user_model()
    User.objects.bulk_create(User(username=f"{tag}-{i}", email=f"{tag}-{i}@example.com") for i in range(count))


def send_campaign(tag: str, count: int) -> tuple[Campaign, float]:
    """A campaign to ``count`` new customers (the earlier campaigns' ones are no longer active);
    returns it and the seconds from Send to "sent"."""
    get_user_model().objects.filter(is_active=True).update(is_active=False)
    customers(tag, count)
    campaign = campaign_create(subject=f"Oat milk week ({tag})", body=BODY)
    start = time.monotonic()
    campaign_start(campaign_id=campaign.id)
    wait_for(
        lambda: Campaign.objects.get(id=campaign.id).status == CampaignStatus.SENT,
        timeout=60,
        interval=0.05,
        message=f"campaign {tag} sent",
    )
    seconds = time.monotonic() - start
    # The last chunk marks the campaign sent just before it gives its slot back.
    wait_for(lambda: not slots_held(tasks.campaign_send_chunk.name), timeout=10, message="campaign slots given back")
    return campaign, seconds


def arrivals(smtp, campaign: Campaign) -> list[float]:
    """When the SMTP server accepted each of the campaign's emails."""
    ours = f"<campaign-{campaign.id}-recipient-"
    with smtp.lock:
        return sorted(m["at"] for m in smtp.messages if (m["message"]["Message-ID"] or "").startswith(ours))


def rate(times: list[float]) -> float:
    """Emails per second from the first arrival to the last."""
    return (len(times) - 1) / (times[-1] - times[0])


def most_in_one_second(times: list[float]) -> int:
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def chunks_sent_by(worker, campaign: Campaign) -> int:
    return len(re.findall(rf"campaign\.chunk_sent campaign_id={campaign.id} ", worker.log()))


def test_three_workers_send_more_keep_the_global_pace_and_do_nothing_twice(
    ledger, fault_env, smtp_server, odoo, set_switch
):
    smtp_server.delay_seconds = SMTP_DELAY_SECONDS
    env = {**WORKER_ENV, **fault_env, **SCALE_ENV}
    # Product embeddings (queue "slow") are not what this is about: no model load in three workers.
    set_switch("catalog.embed_products", "off")

    # Given one worker without a pace, the rate at which a campaign's emails arrive
    with celery_workers(["w1@%h"], queues="fast", env=env, log_dir=LOG_DIR):
        alone, seconds = send_campaign("alone", 40)
    rate_one = rate(arrivals(smtp_server, alone))
    ledger.event(f"one worker: 40 emails, {seconds:.1f}s from Send to sent, {rate_one:.1f}/s arriving")

    # When three workers (three node names) on the same Postgres and Redis send the next one,
    # with a pace between what one and what three can send
    pace = round(2 * rate_one, 1)
    env["CAMPAIGN_MAX_PER_SECOND"] = str(pace)
    with celery_workers(["w1@%h", "w2@%h", "w3@%h"], queues="fast", env=env, log_dir=LOG_DIR) as workers:
        ledger.workers += workers
        nodes = {name.split("@")[0] for name in (app.control.inspect(timeout=5, limit=3).ping() or {})}
        assert nodes == {"w1", "w2", "w3"}, nodes
        together, seconds = send_campaign("together", 90)  # three chunks per worker
        times = arrivals(smtp_server, together)
        rate_three = rate(times)
        ledger.event(f"three workers, pace {pace}/s: 90 emails, {seconds:.1f}s from Send to sent, {rate_three:.1f}/s")

        # and a burst of paid orders and stock changes goes through them
        ledger.create(products=0, orders=8, stock_changes=8)
        ledger.product_ids.clear()  # their embeddings are switched off: no effect to wait for
        assert ledger.wait_until_done(timeout=60)
        report = ledger.report()

    # Then three send about twice as much as one: as much as the pace allows
    assert rate_three >= 1.6 * rate_one
    # and each of the three sent part of the campaign
    assert all(chunks_sent_by(worker, together) for worker in workers)

    # and the three together kept to the global pace, as the SMTP server saw it
    print(f"pace {pace}/s: at most {most_in_one_second(times)} emails arrived in one second", flush=True)
    assert rate_three <= pace * 1.05
    # (each send takes its slot plus its own, varying, time on the wire: a second may catch a few more)
    assert most_in_one_second(times) <= pace + 3

    # and every campaign email arrived exactly once
    with smtp_server.lock:
        message_ids = [m["message"]["Message-ID"] for m in smtp_server.messages]
    for campaign in (alone, together):
        recipients = CampaignRecipient.objects.filter(campaign=campaign)
        assert set(recipients.values_list("status", flat=True)) == {Status.SENT}
        for recipient_id in recipients.values_list("id", flat=True):
            assert message_ids.count(recipient_message_id(campaign_id=campaign.id, recipient_id=recipient_id)) == 1

    # and every notification, order email and Odoo order exactly once, Odoo's quantities exact
    figures = report["figures"]
    for kind in ("notifications", "emails", "odoo_orders", "odoo_stock"):
        assert figures[kind].lost == 0 and figures[kind].duplicated == 0, (kind, figures[kind])
    # and no stock change written to Odoo twice: one write per changed pair at least, never
    # more than the changes (each order's pair changes twice: stocked, then sold)
    pairs = len(set(ledger.stock_product_ids))
    changes = len(ledger.stock_product_ids) + len(ledger.order_ids)
    assert pairs <= odoo.quantity_writes <= changes, (pairs, odoo.quantity_writes, changes)
    assert report["ledger"]["outbox_left"] == 0 and report["ledger"]["inbox_open"] == 0
