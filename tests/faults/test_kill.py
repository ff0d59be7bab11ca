"""SIGKILL: a worker dies mid-burst without a word (OOM killer, lost host, kill -9).

Whatever it held is then only in the ledger: the job it was running (claimed, its
heartbeat stops), and a message it had just popped from the queue (the Redis
transport removes it before recording it as unacknowledged, so not even the
visibility timeout brings it back). The next worker must redo all of it, once.

The one thing no system can close is an email the SMTP server accepted before the
worker could mark its delivery sent: a kill there makes the next worker send it
again. The kills here land outside that window (or anywhere, at random); a kill
that lands inside is reported as "in window", not failed. The last case kills
inside the window on purpose, to show that such a duplicate is seen and attributed.
"""

import asyncio
import threading
import time

import pytest

from celeste.background.models import OutboxMessage

from ..conftest import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.faults, pytest.mark.django_db(transaction=True)]


def busy_with_a_backlog(redis):
    """The worker runs a job and more wait in its queues: the middle of a burst."""
    return lambda: OutboxMessage.objects.exclude(worker_id="").exists() and (redis.llen("fast") or redis.llen("slow"))


def test_two_kills_mid_burst_lose_nothing_and_repeat_nothing(ledger, fault_worker, redis, rng):
    # Given a worker sending the emails of a burst of every kind of job
    first = fault_worker()
    ledger.create(products=40, orders=10, stock_changes=10)
    wait_for(
        lambda: ledger.emails_midway() and (redis.llen("fast") or redis.llen("slow")),
        timeout=60,
        interval=0.05,
        message="the worker sending emails with more jobs queued",
    )

    # When it is killed right after it takes a message off the queue
    assert ledger.take_message(redis), "no message left to take"
    ledger.kill(first, "SIGKILL #1, right after the worker took a message")
    # and its successor, while the burst goes on, is killed at a random moment
    second = fault_worker()
    ledger.create(products=20, orders=5, stock_changes=5)
    delay = rng.uniform(0.5, 8.0)
    ledger.event(f"second kill in {delay:.2f}s (random)")
    time.sleep(delay)
    ledger.kill(second, "SIGKILL #2, at a random moment")
    fault_worker()

    # Then a third worker finishes everything: nothing lost, nothing done twice
    ledger.check(timeout=90)


def test_a_kill_on_the_default_heartbeat_settings_recovers_within_a_minute(ledger, fault_worker, redis):
    # Given a worker on the production heartbeat, dead-after and unclaimed-after settings
    first = fault_worker(quick=False)
    ledger.create(products=40, orders=10, stock_changes=10)
    wait_for(busy_with_a_backlog(redis), timeout=30, message="the worker busy with a backlog")

    # When it is killed mid-burst and a new worker starts
    ledger.kill(first, "SIGKILL on default settings")
    fault_worker(quick=False)

    # Then everything is done, once, within a minute of the kill
    report = ledger.check(timeout=90)
    assert report["recovery_seconds"] < 60


def test_a_kill_inside_the_window_is_reported_as_in_window(ledger, fault_worker, smtp_server):
    # Given a worker that the SMTP server kills the moment it has accepted the third
    # email, before the worker hears "250" and can mark the delivery sent
    worker = fault_worker()
    killed = threading.Event()
    handle_data = smtp_server.controller.handler.handle_DATA

    async def accept_then_kill(server, session, envelope):
        answer = await handle_data(server, session, envelope)
        if len(smtp_server.messages) == 3 and not killed.is_set():
            await asyncio.to_thread(worker.kill)
            killed.set()
        return answer

    smtp_server.controller.handler.handle_DATA = accept_then_kill
    ledger.create(products=5, orders=6, stock_changes=0)

    # When that kill happens
    assert killed.wait(60), "the third email never arrived"
    ledger.killed(worker, "SIGKILL inside the window (the SMTP server had just accepted an email)")
    fault_worker()

    # Then the next worker sends that email again, and the report says why
    report = ledger.check(timeout=60)
    assert len(ledger.in_window) == 1
    assert (report["figures"]["emails"].duplicated, report["figures"]["emails"].in_window) == (1, 1)
