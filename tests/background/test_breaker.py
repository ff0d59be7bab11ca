"""The automatic rollback breaker: a task failing past its threshold flips its
switch to the fallback (recorded, staff emailed), half-opens after the cool-down,
and closes once trial runs succeed — with a real worker and a real SMTP server."""

import time

import pytest

from catalog.tasks import embed_products
from celeste.background import breaker
from celeste.background.models import BreakerState, FailedTask, TaskMode, TaskSwitch
from notifications import services
from notifications.models import Delivery, DeliveryStatus
from notifications.tasks import send_email

from ..conftest import postgres_down, wait_for
from ..factories import UserFactory, place_order, reach

POLICY = {
    "breaker_enabled": True,
    "breaker_error_rate": 0.5,
    "breaker_min_runs": 4,
    "breaker_window_seconds": 300,
    "breaker_fallback": TaskMode.OFF,
    "breaker_cooldown_seconds": 1,
    "breaker_trial_runs": 2,
}


def policy(task_name: str, **overrides) -> TaskSwitch:
    switch, _ = TaskSwitch.objects.update_or_create(task_name=task_name, defaults={**POLICY, **overrides})
    return switch


def order_emails(count: int) -> None:
    for _ in range(count):
        user = UserFactory(email=f"u{time.monotonic_ns()}@example.com")
        services.notification_dispatch_order_event(order_id=reach(place_order(user=user), "paid").id, status="paid")


def test_outcomes_are_counted_only_for_tasks_with_a_breaker(db, redis):
    policy("tests.with_breaker")

    for ok in (True, False, False):
        breaker.outcome_record("tests.with_breaker", ok=ok)
        breaker.outcome_record("tests.without_breaker", ok=ok)

    assert breaker.window_figures("tests.with_breaker", 60) == {"runs": 3, "errors": 2, "error_rate": 0.667}
    assert breaker.window_figures("tests.without_breaker", 60)["runs"] == 0


def test_too_few_runs_do_not_open_it_however_they_failed(db, redis):
    policy("tests.with_breaker", breaker_min_runs=5)
    for _ in range(4):
        breaker.outcome_record("tests.with_breaker", ok=False)

    assert breaker.breakers_evaluate() == []
    assert TaskSwitch.objects.get(task_name="tests.with_breaker").breaker_state == BreakerState.CLOSED


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_task_failing_every_time_flips_its_switch_then_heals(
    start_worker, channels_env, smtp_server, set_switch, settings
):
    set_switch(embed_products.name, "off")
    settings.BREAKER_ALERT_EMAILS = ["oncall@example.com"]
    policy(send_email.name)
    smtp_server.fail_with = "451 4.3.0 Try again later"  # every email refused
    start_worker(**channels_env)

    # Three emails, each tried twice (TASK_MAX_RETRIES=1 in the worker): six errors in six runs
    order_emails(3)
    wait_for(lambda: FailedTask.objects.filter(task_name=send_email.name).count() == 3, message="3 in the inbox")
    smtp_server.fail_with = None  # so the alert gets through

    assert breaker.breakers_evaluate() == [f"{send_email.name}: open"]

    switch = TaskSwitch.objects.get(task_name=send_email.name)
    assert (switch.mode, switch.breaker_state) == (TaskMode.OFF, BreakerState.OPEN)
    change = switch.changes.get()
    assert (change.changed_by, change.from_mode, change.to_mode) == ("breaker", "background", "off")
    assert change.figures == {"runs": 6, "errors": 6, "error_rate": 1.0}
    alert = wait_for(lambda: next((m for m in smtp_server.messages if "breaker" in m["message"]["Subject"]), None))
    assert alert["to"] == ["oncall@example.com"] and send_email.name in alert["message"]["Subject"]

    # While open, email is off: a new order email is skipped, not sent
    order_emails(1)
    assert Delivery.objects.filter(channel="email", status=DeliveryStatus.SKIPPED).count() == 1

    # After the cool-down: half-open, trial runs in the background; they succeed, it closes
    time.sleep(1.1)
    assert breaker.breakers_evaluate() == [f"{send_email.name}: half-open"]
    assert TaskSwitch.objects.get(task_name=send_email.name).mode == TaskMode.BACKGROUND
    order_emails(2)
    wait_for(
        lambda: Delivery.objects.filter(channel="email", status=DeliveryStatus.SENT).count() == 2,
        message="the trial emails sent",
    )
    wait_for(lambda: breaker.trial_figures(send_email.name)["runs"] == 2, message="the trials counted")
    assert breaker.breakers_evaluate() == [f"{send_email.name}: closed"]

    switch.refresh_from_db()
    assert (switch.mode, switch.breaker_state) == (TaskMode.BACKGROUND, BreakerState.CLOSED)
    assert [c.to_mode for c in switch.changes.order_by("changed_at", "id")] == ["off", "background", "background"]


@pytest.mark.django_db
def test_a_failed_trial_opens_it_again_for_another_cool_down(redis):
    policy("tests.with_breaker", breaker_state=BreakerState.HALF_OPEN, breaker_cooldown_seconds=60)
    breaker.outcome_record("tests.with_breaker", ok=True)
    breaker.outcome_record("tests.with_breaker", ok=False)

    assert breaker.breakers_evaluate() == ["tests.with_breaker: open"]
    switch = TaskSwitch.objects.get(task_name="tests.with_breaker")
    assert (switch.mode, switch.breaker_state) == (TaskMode.OFF, BreakerState.OPEN)
    assert "a trial run failed" in switch.changes.get().reason
    assert breaker.breakers_evaluate() == []  # the cool-down has just begun


@pytest.mark.django_db(transaction=True)
def test_counting_an_outcome_never_fails_a_task_while_postgres_restarts(redis, embedded_root):
    # It runs in the retry and finish paths of every task: an error there would turn a
    # retry into a failure (the fault suite's Postgres restart found it).
    with postgres_down(embedded_root):
        breaker.outcome_record(send_email.name, ok=False)  # the switch cannot be read: not counted, no error
