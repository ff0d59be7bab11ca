"""The task console: heartbeats carry each worker's task totals, the sampler turns
them into per-minute TaskSample rows (deltas summed over workers, idempotent per
minute, pruned after TASK_SAMPLES_KEEP_DAYS), the selectors compute rates and
quantiles from them, the admin page and the staff API show them, and the periodic
tasks' admin shows their last run."""

from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_results.models import TaskResult

from catalog.tasks import embed_products
from celeste.background import selectors
from celeste.background.models import FailedTask, OutboxMessage, TaskSample, TaskSwitch, WorkerHeartbeat
from celeste.background.queue import enqueue
from celeste.background.schedules import ensure_periodic_tasks
from celeste.background.services import task_samples_record
from celeste.background.tasks import ping, relay_outbox, sample_tasks
from notifications import services as notification_services
from notifications.tasks import send_email

from ..conftest import published, queued_messages, wait_for
from ..factories import UserFactory, place_order, reach

PING = ping.name
EMAIL = send_email.name
# Half a minute into a minute an hour ago (samples older than TASK_SAMPLES_KEEP_DAYS are pruned).
T0 = timezone.now().replace(minute=0, second=30, microsecond=0) - timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def totals(succeeded=0, failed=0, retried=0, fast=0, slow=0, runtime_sum=0.0) -> dict:
    """One task's cumulative totals as a heartbeat stores them: ``fast`` runs took
    under 0.1 s, ``slow`` ones between 0.1 and 1 s."""
    return {
        "succeeded": succeeded,
        "failed": failed,
        "retried": retried,
        "runtime_buckets": {"0.1": fast, "1.0": fast + slow, "+Inf": fast + slow},
        "runtime_sum": runtime_sum,
    }


def beat(worker_id: str, task_totals: dict) -> None:
    now = timezone.now()
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id,
        defaults={"hostname": f"celery@{worker_id}", "pid": 1, "last_seen_at": now, "task_totals": task_totals},
        create_defaults={
            "hostname": f"celery@{worker_id}",
            "pid": 1,
            "started_at": now,
            "last_seen_at": now,
            "task_totals": task_totals,
        },
    )


def rows(minute: datetime) -> dict[str, tuple]:
    """{task: (runs, failures, retries, +Inf bucket, runtime_sum)} of one minute."""
    return {
        sample.task_name: (
            sample.runs,
            sample.failures,
            sample.retries,
            sample.runtime_buckets.get("+Inf", 0),
            round(sample.runtime_sum, 3),
        )
        for sample in TaskSample.objects.filter(minute=minute.replace(second=0, microsecond=0))
        if sample.runs or sample.retries
    }


# --- quantiles from buckets (no database) ----------------------------------------------


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, {"0.1": 0, "1.0": 10, "+Inf": 10}, 0.55),  # halfway through (0.1, 1.0]
        (0.5, {"1.0": 10, "+Inf": 10}, 0.5),  # the first bucket starts at 0
        (0.95, {"1.0": 5, "+Inf": 10}, 1.0),  # in +Inf: the highest finite bound
        (0.5, {"0.1": 2, "0.5": 6, "+Inf": 8}, 0.3),  # rank 4 of 4 in (0.1, 0.5]: 0.1 + 0.4 * 2/4
        (0.5, {"0.1": 0, "+Inf": 0}, None),  # no runs
        (0.5, {}, None),
    ],
)
def test_quantiles_interpolate_within_a_bucket_like_prometheus(q, buckets, expected):
    result = selectors.histogram_quantile(q, buckets)

    assert result == pytest.approx(expected) if expected is not None else result is None


def test_buckets_merge_before_the_quantile():
    merged = selectors.buckets_add(
        selectors.buckets_add({}, {"0.1": 10, "1.0": 10, "+Inf": 10}), {"0.1": 0, "1.0": 10, "+Inf": 10}
    )

    assert merged == {"0.1": 10, "1.0": 20, "+Inf": 20}
    assert selectors.histogram_quantile(0.5, merged) == pytest.approx(0.1)
    assert selectors.histogram_quantile(0.95, merged) == pytest.approx(0.1 + 0.9 * 9 / 10)


# --- the sampler (heartbeat rows written here, no worker) ------------------------------


@pytest.mark.django_db
def test_the_sampler_sums_each_workers_new_runs_per_task(redis):
    beat("a", {PING: totals(succeeded=5, fast=5, runtime_sum=0.2), EMAIL: totals(failed=1, retried=2, slow=3)})
    beat("b", {PING: totals(succeeded=3, failed=1, slow=4, runtime_sum=1.5)})

    task_samples_record(at=T0)
    assert rows(T0) == {PING: (9, 1, 0, 9, 1.7), EMAIL: (1, 1, 2, 3, 0.0)}

    beat("a", {PING: totals(succeeded=7, fast=7, runtime_sum=0.3), EMAIL: totals(failed=1, retried=2, slow=3)})
    beat("b", {PING: totals(succeeded=4, failed=1, slow=5, runtime_sum=2.0)})
    task_samples_record(at=T0 + MINUTE)

    # only what is new since the last sample: 2 on a, 1 on b; nothing for the email
    assert rows(T0 + MINUTE) == {PING: (3, 0, 0, 3, 0.6)}
    sample = TaskSample.objects.get(minute=(T0 + MINUTE).replace(second=0), task_name=PING)
    assert sample.runtime_buckets == {"0.1": 2, "1.0": 3, "+Inf": 3}
    assert WorkerHeartbeat.objects.get(worker_id="a").sampled_totals[PING]["succeeded"] == 7


@pytest.mark.django_db
def test_a_restarted_worker_counts_from_its_own_zero(redis):
    beat("a", {PING: totals(succeeded=50, fast=50)})
    task_samples_record(at=T0)
    WorkerHeartbeat.objects.filter(worker_id="a").delete()  # signed off

    beat("a2", {PING: totals(succeeded=2, fast=2)})  # the same host, started again: a new row
    task_samples_record(at=T0 + MINUTE)
    assert rows(T0 + MINUTE) == {PING: (2, 0, 0, 2, 0.0)}

    # counters that went down (its metrics files were emptied) start again from zero too
    beat("a2", {PING: totals(succeeded=1, fast=1)})
    task_samples_record(at=T0 + 2 * MINUTE)
    assert rows(T0 + 2 * MINUTE) == {PING: (1, 0, 0, 1, 0.0)}


@pytest.mark.django_db
def test_running_twice_in_the_same_minute_writes_the_same_rows(redis):
    beat("a", {PING: totals(succeeded=4, fast=4)})
    task_samples_record(at=T0)
    beat("a", {PING: totals(succeeded=6, fast=6)})
    task_samples_record(at=T0 + MINUTE)
    first = rows(T0 + MINUTE)

    task_samples_record(at=T0 + MINUTE + timedelta(seconds=10))

    assert rows(T0 + MINUTE) == first == {PING: (2, 0, 0, 2, 0.0)}
    assert TaskSample.objects.filter(task_name=PING).count() == 2
    # runs that arrive before the second run of the minute join it, still counted once
    beat("a", {PING: totals(succeeded=7, fast=7)})
    task_samples_record(at=T0 + MINUTE + timedelta(seconds=20))
    assert rows(T0 + MINUTE) == {PING: (3, 0, 0, 3, 0.0)}
    task_samples_record(at=T0 + 2 * MINUTE)
    assert rows(T0 + 2 * MINUTE) == {}


@pytest.mark.django_db
def test_a_late_tick_for_an_earlier_minute_writes_nothing(redis):
    beat("a", {PING: totals(succeeded=4, fast=4)})
    task_samples_record(at=T0 + MINUTE)
    beat("a", {PING: totals(succeeded=9, fast=9)})

    assert task_samples_record(at=T0) == 0
    assert rows(T0) == {}
    assert rows(T0 + MINUTE) == {PING: (4, 0, 0, 4, 0.0)}


@pytest.mark.django_db(transaction=True)
def test_samples_carry_what_waits_when_they_are_taken(redis):
    FailedTask.objects.create(task_name=EMAIL, error="boom")
    enqueue(ping)
    enqueue(ping)
    published()

    task_samples_record(at=T0)

    sample = TaskSample.objects.get(task_name=PING)
    assert (sample.runs, sample.queue_length, sample.outbox_backlog, sample.inbox_open) == (0, 2, 2, 0)
    assert TaskSample.objects.get(task_name=EMAIL).inbox_open == 1
    # every task on the fast queue sees its length; a task with nothing to show has no row
    assert TaskSample.objects.get(task_name=relay_outbox.name).queue_length == 2
    assert not TaskSample.objects.filter(task_name=embed_products.name).exists()


@pytest.mark.django_db
def test_samples_older_than_the_keep_days_are_pruned(redis, settings):
    settings.TASK_SAMPLES_KEEP_DAYS = 7
    now = timezone.now()
    for days in (8, 6):
        TaskSample.objects.create(minute=now - timedelta(days=days), task_name=PING, runs=1)

    sample_tasks()  # the beat task itself

    assert [round((now - s.minute).total_seconds() / 86400) for s in TaskSample.objects.all()] == [6]


def test_the_sampler_is_a_periodic_task_every_minute(db):
    row = PeriodicTask.objects.get(task=sample_tasks.name)

    assert (row.interval.every, row.interval.period) == (60, "seconds")


# --- the console's figures ---------------------------------------------------------------


def sample(minute: datetime, task_name: str = PING, **figures) -> TaskSample:
    return TaskSample.objects.create(minute=minute.replace(second=0, microsecond=0), task_name=task_name, **figures)


@pytest.mark.django_db
def test_the_console_computes_rates_and_quantiles_over_the_window(redis):
    now = timezone.now()
    sample(
        now - timedelta(minutes=5), runs=10, failures=1, retries=2, runtime_buckets={"0.1": 10, "1.0": 10, "+Inf": 10}
    )
    sample(now - timedelta(minutes=2), runs=10, failures=1, runtime_buckets={"0.1": 0, "1.0": 10, "+Inf": 10})
    sample(now - timedelta(hours=3), runs=500, failures=500)  # outside the hour

    console = selectors.task_console(hours=1, now=now)

    task = next(t for t in console["tasks"] if t["task_name"] == PING)
    assert (task["runs"], task["failures"], task["retries"]) == (20, 2, 2)
    assert task["runs_per_minute"] == pytest.approx(20 / 60, abs=0.001)
    assert task["error_rate"] == pytest.approx(0.1)
    assert task["p50_seconds"] == pytest.approx(0.1)
    assert task["p95_seconds"] == pytest.approx(0.1 + 0.9 * 9 / 10)
    assert (console["bucket_minutes"], len(task["series"])) == (1, 60)
    assert sum(point["runs"] for point in task["series"]) == 20
    assert task["queue"] == "fast"
    day = selectors.task_console(hours=24, now=now)
    assert (day["bucket_minutes"], len(day["tasks"][0]["series"])) == (10, 144)


# --- the admin page ----------------------------------------------------------------------

CONSOLE = "admin:background_tasksample_changelist"
SWITCH = "admin:background_tasksample_switch"


@pytest.fixture
def superuser_client():
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def staff_with(*codenames: str) -> Client:
    user = UserFactory(is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="background", codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_console_page_shows_each_tasks_figures_and_charts(superuser_client, redis):
    now = timezone.now()
    sample(now - timedelta(minutes=3), runs=30, failures=3, retries=4, runtime_buckets={"0.5": 30, "+Inf": 30})
    failure = FailedTask.objects.create(task_name=PING, error="ZeroDivisionError: the cause")
    enqueue(ping)

    response = superuser_client.get(reverse(CONSOLE))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Background tasks" in page
    assert page.count("<svg") >= 2 * len(selectors.task_names())
    row = page[page.index(f"<th>{PING}</th>") :].split("</tr>")[0]
    assert "0.021" in row  # runs per minute: 30 over 24 h
    assert "10.0 %" in row  # error rate
    assert "0.25 s" in row  # p50: halfway through (0, 0.5]
    assert "ZeroDivisionError: the cause" in row
    assert reverse("admin:background_failedtask_change", args=[failure.id]) in row
    assert "task_name__exact=background.ping" in row
    assert "1 open" in row
    assert 'name="csrfmiddlewaretoken"' in row
    assert superuser_client.get(reverse(CONSOLE), {"hours": "1"}).status_code == 200


@pytest.mark.django_db
def test_switching_from_the_page_needs_the_change_permission(redis):
    viewer = staff_with("view_taskswitch")
    assert viewer.get(reverse(CONSOLE)).status_code == 200
    assert 'name="mode"' not in viewer.get(reverse(CONSOLE)).content.decode()  # no forms

    assert viewer.post(reverse(SWITCH), {"task_name": PING, "mode": "off"}).status_code == 403
    customer = Client()
    customer.force_login(UserFactory())
    assert customer.post(reverse(SWITCH), {"task_name": PING, "mode": "off"}).status_code == 302  # to the login
    assert not TaskSwitch.objects.filter(task_name=PING, mode="off").exists()

    editor = staff_with("view_taskswitch", "change_taskswitch")
    response = editor.post(reverse(SWITCH), {"task_name": PING, "mode": "off"})

    assert response.status_code == 302
    assert TaskSwitch.objects.get(task_name=PING).mode == "off"
    assert editor.post(reverse(SWITCH), {"task_name": PING, "mode": "sideways"}).status_code == 302
    assert TaskSwitch.objects.get(task_name=PING).mode == "off"


@pytest.mark.django_db
def test_a_switch_change_needs_the_csrf_token(redis):
    user = UserFactory(is_staff=True, is_superuser=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    assert client.post(reverse(SWITCH), {"task_name": PING, "mode": "off"}).status_code == 403
    page = client.get(reverse(CONSOLE))
    token = page.context["csrf_token"]
    answer = client.post(reverse(SWITCH), {"task_name": PING, "mode": "sync", "csrfmiddlewaretoken": token})
    assert answer.status_code == 302
    assert TaskSwitch.objects.get(task_name=PING).mode == "sync"


@pytest.mark.django_db
def test_switching_the_relay_off_asks_for_confirmation(superuser_client, redis):
    relay = relay_outbox.name

    asked = superuser_client.post(reverse(SWITCH), {"task_name": relay, "mode": "off"})

    assert asked.status_code == 200
    assert "Yes, switch it off" in asked.content.decode()
    assert TaskSwitch.objects.get(task_name=relay).mode == "background"
    superuser_client.post(reverse(SWITCH), {"task_name": relay, "mode": "off", "confirmed": "yes"})
    assert TaskSwitch.objects.get(task_name=relay).mode == "off"


# --- the staff API -----------------------------------------------------------------------

API = "/api/v1/background/tasks/"


@pytest.mark.django_db
def test_the_api_is_for_staff_and_checks_hours(api_client, customer_client, staff_client, redis):
    sample(timezone.now() - timedelta(minutes=1), runs=6, failures=3, runtime_buckets={"1.0": 6, "+Inf": 6})

    assert api_client.get(API).status_code == 401
    assert customer_client.get(API).status_code == 403
    for bad in ("0", "169", "day", "1.5"):
        response = staff_client.get(API, {"hours": bad})
        assert response.status_code == 400, bad
        assert "hours" in response.json()
    body = staff_client.get(API, {"hours": 2}).json()

    assert (body["hours"], body["bucket_minutes"]) == (2, 1)
    task = next(t for t in body["tasks"] if t["task_name"] == PING)
    assert (task["runs"], task["failures"], task["error_rate"], task["p50_seconds"]) == (6, 3, 0.5, 0.5)
    assert len(task["series"]) == 120
    assert {"start", "runs", "failures", "retries", "p95_seconds", "queue_length", "outbox_backlog"} <= set(
        task["series"][0]
    )
    assert staff_client.get("/api/v1/background/tasks").status_code == 200  # without the slash too


# --- the periodic tasks' admin -----------------------------------------------------------


@pytest.mark.django_db
def test_periodic_tasks_show_their_last_run(superuser_client):
    relay = PeriodicTask.objects.get(task=relay_outbox.name)
    done = timezone.now()
    for task_id, seconds_ago, status in [("older", 60, "FAILURE"), ("latest", 0, "SUCCESS")]:
        result = TaskResult.objects.create(
            task_id=task_id,
            task_name=relay_outbox.name,
            periodic_task_name=relay.name,
            status=status,
            result="3",
            date_started=done - timedelta(seconds=seconds_ago + 1.25),
        )
        TaskResult.objects.filter(id=result.id).update(date_done=done - timedelta(seconds=seconds_ago))

    listing = superuser_client.get(reverse("admin:django_celery_beat_periodictask_changelist")).content.decode()
    row = listing[listing.index(relay.name) :].split("</tr>")[0]
    assert "SUCCESS" in row
    assert "1.25 s" in row
    detail = superuser_client.get(reverse("admin:django_celery_beat_periodictask_change", args=[relay.id]))
    assert detail.status_code == 200
    assert "Last run (stored result)" in detail.content.decode()
    assert "1.25 s" in detail.content.decode()


# --- end to end, with a real worker ------------------------------------------------------


def worker_totals(task_name: str) -> dict:
    found = {"succeeded": 0, "failed": 0, "retried": 0}
    for task_totals in WorkerHeartbeat.objects.values_list("task_totals", flat=True):
        for key in found:
            found[key] += task_totals.get(task_name, {}).get(key, 0)
    return found


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_workers_runs_reach_the_samples_and_the_api(
    start_worker, channels_env, smtp_server, set_switch, staff_client
):
    set_switch(embed_products.name, "off")
    smtp_server.fail_with = "451 4.3.0 Try again later"  # refused until the retry (TASK_MAX_RETRIES=1) runs out
    notification_services.notification_dispatch_order_event(
        order_id=reach(place_order(user=UserFactory(email="a@example.com")), "paid").id, status="paid"
    )
    for _ in range(3):
        enqueue(ping)
    published()
    start_worker(WORKER_HEARTBEAT_SECONDS="1", **channels_env)

    wait_for(lambda: FailedTask.objects.filter(task_name=EMAIL).exists(), message="the inbox row")
    wait_for(
        lambda: worker_totals(PING)["succeeded"] == 3 and worker_totals(EMAIL)["failed"] == 1,
        message="the heartbeat carrying the totals",
    )
    task_samples_record()

    minute = timezone.now().replace(second=0, microsecond=0)
    samples = {s.task_name: s for s in TaskSample.objects.all()}
    assert samples[PING].minute <= minute
    assert (samples[PING].runs, samples[PING].failures, samples[PING].runtime_buckets["+Inf"]) == (3, 0, 3)
    assert (samples[EMAIL].runs, samples[EMAIL].failures, samples[EMAIL].retries) == (1, 1, 1)
    assert samples[EMAIL].inbox_open == 1
    body = staff_client.get(API, {"hours": 1}).json()
    by_name = {task["task_name"]: task for task in body["tasks"]}
    assert (by_name[PING]["runs"], by_name[PING]["error_rate"]) == (3, 0.0)
    assert by_name[PING]["p95_seconds"] is not None
    assert (by_name[EMAIL]["failures"], by_name[EMAIL]["retries"], by_name[EMAIL]["error_rate"]) == (1, 1, 1.0)
    assert by_name[EMAIL]["last_failure"]["id"] == FailedTask.objects.get(task_name=EMAIL).id


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_periodic_tasks_stored_result_records_when_it_started(worker, beat):
    samples = PeriodicTask.objects.get(task=sample_tasks.name)  # due at once when beat starts

    def timed_result():
        return TaskResult.objects.filter(
            periodic_task_name=samples.name, status="SUCCESS", date_started__isnull=False
        ).first()

    result = wait_for(timed_result, timeout=60, message="a sample tick's result with its start")
    assert result.date_started <= result.date_done
    # an ordinary job's result is stored once, without STARTED
    enqueue(ping)
    published()
    done = wait_for(lambda: TaskResult.objects.filter(task_name=ping.name, status="SUCCESS").first(), message="ping")
    assert done.date_started is None


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_idle_relay_ticks_leave_no_result_row_and_no_info_line_but_a_working_tick_does(start_worker, beat, redis):
    # The worker's heartbeat relays too: slowed down here, so the beat's ticks do the relaying.
    worker = start_worker(WORKER_HEARTBEAT_SECONDS="600", WORKER_DEAD_AFTER_SECONDS="1200")
    relay = PeriodicTask.objects.get(task=relay_outbox.name)
    wait_for(lambda: beat.log_path.read_text().count(f"Sending due task {relay.name}") >= 2, message="two relay ticks")
    wait_for(lambda: not queued_messages(redis, "fast"), message="the ticks run")

    assert not TaskResult.objects.filter(task_name=relay_outbox.name).exists()
    assert "background.relay_outbox[" not in worker.log_path.read_text()

    # A job left pending (its publisher never ran): the next tick relays it, and says so.
    OutboxMessage.objects.create(task_name=ping.name, kwargs={})
    OutboxMessage.objects.filter(task_name=ping.name).update(created_at=timezone.now() - timedelta(seconds=60))
    stored = wait_for(
        lambda: TaskResult.objects.filter(task_name=relay_outbox.name, status="SUCCESS").first(),
        message="a working relay tick's result",
    )
    assert stored.result == "1"
    log = worker.log_path.read_text()
    assert "outbox.relayed" in log and f"{relay_outbox.name}[{stored.task_id}] succeeded" in log


@pytest.mark.django_db
def test_periodic_tasks_are_described_and_their_page_picks_the_registered_task(superuser_client):
    relay = PeriodicTask.objects.get(task=relay_outbox.name)
    assert relay.description.startswith("Publishes the jobs whose publishing failed")
    PeriodicTask.objects.filter(id=relay.id).update(description="")
    ensure_periodic_tasks()  # fills an empty description, overwrites nothing else
    assert PeriodicTask.objects.get(id=relay.id).description == relay.description

    page = superuser_client.get(reverse("admin:django_celery_beat_periodictask_change", args=[relay.id]))
    listing = superuser_client.get(reverse("admin:django_celery_beat_periodictask_changelist")).content.decode()

    assert f'<option value="{relay_outbox.name}" selected>' in page.content.decode()
    assert "Publishes the jobs whose publishing failed" in listing
