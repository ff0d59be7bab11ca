"""The failed-task inbox as staff use it: failures grouped by task and error, Retry and
Discard from the pages, arguments linking to their objects, the count on the admin home;
the admin site itself (header, View site); switches' pages."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from catalog.models import ProductEmbedding
from catalog.tasks import embed_products
from celeste.background.models import FailedTask, FailedTaskStatus, FailureGroup, OutboxMessage, TaskSwitch
from celeste.background.queue import error_fingerprint, failed_task_record
from celeste.background.services import task_switch_set
from celeste.background.tasks import ping, relay_outbox

from ..factories import ProductFactory, UserFactory, place_order

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def fail(task_name: str, error: str, *, task_id: str = "", **kwargs) -> FailedTask:
    return failed_task_record(
        task_name=task_name, task_id=task_id, kwargs=kwargs, exc=RuntimeError(error), tb="Traceback …", attempts=3
    )


def test_failures_of_one_cause_make_one_group_whatever_their_numbers_and_ids():
    first = fail("orders.cache_enriched_order", "order 17 not found at 10.0.0.1:8000", order_id=17)
    second = fail("orders.cache_enriched_order", "order 23 not found at 10.0.0.2:8001", order_id=23)
    other_error = fail("orders.cache_enriched_order", "Redis refused 'AUTH'", order_id=17)
    other_task = fail("orders.feed_popularity", "order 17 not found at 10.0.0.1:8000", order_id=17)

    group = FailureGroup.objects.get(id=first.group_id)
    assert second.group_id == group.id
    assert len({group.id, other_error.group_id, other_task.group_id}) == 3
    assert (group.count, group.title) == (2, "RuntimeError: order 17 not found at 10.0.0.1:8000")
    assert group.first_seen <= group.last_seen
    assert error_fingerprint("t", "E: 'a' 1") == error_fingerprint("t", "E: 'b' 2") != error_fingerprint("t", "F: 1")


def test_a_redelivered_message_failing_again_is_not_counted_twice():
    fail("background.ping", "boom", task_id="job-1")
    fail("background.ping", "boom", task_id="job-1")

    assert FailedTask.objects.count() == 1
    assert FailureGroup.objects.get().count == 1


def test_the_group_list_shows_open_groups_with_their_counts(admin_client):
    fail("background.ping", "boom 1")
    fail("background.ping", "boom 2")
    resolved = fail("orders.feed_popularity", "gone")
    FailedTask.objects.filter(id=resolved.id).update(status=FailedTaskStatus.DISCARDED)

    page = admin_client.get(reverse("admin:background_failuregroup_changelist") + "?status=open").content.decode()

    assert "RuntimeError: boom 1" in page and "gone" not in page


def test_retry_from_the_group_page_links_each_job_to_its_new_attempt_which_rejoins_the_group_if_it_fails(
    admin_client,
):
    jobs = [fail("background.ping", f"boom {n}") for n in (1, 2)]
    group_url = reverse("admin:background_failuregroup_change", args=[jobs[0].group_id])
    retry_url = reverse("admin:background_failuregroup_retry", args=[jobs[0].group_id])

    page = admin_client.get(group_url).content.decode()
    assert 'id="inbox-retry"' in page and "Retry 2 open jobs" in page
    assert admin_client.get(retry_url).status_code == 405
    assert admin_client.post(retry_url).status_code == 302

    retried = {job.id: job for job in FailedTask.objects.all()}
    assert all(job.status == FailedTaskStatus.RETRIED for job in retried.values())
    new_attempt = retried[jobs[0].id].retry_job_id
    assert OutboxMessage.objects.filter(id=new_attempt, task_name="background.ping").exists()
    job_page = reverse("admin:background_failedtask_change", args=[jobs[0].id])
    assert "(waiting or running)" in admin_client.get(job_page).content.decode()

    # The new attempt fails too (a worker records it under its job id): same group, linked.
    again = fail("background.ping", "boom 3", task_id=new_attempt)
    assert again.group_id == jobs[0].group_id
    assert FailureGroup.objects.get(id=again.group_id).count == 3
    assert f"job #{again.id} (failed again)" in admin_client.get(job_page).content.decode()
    # Nothing open left in the group but the new failure: retrying twice re-enqueues it once.
    admin_client.post(retry_url)
    admin_client.post(retry_url)
    assert OutboxMessage.objects.filter(task_name="background.ping").count() == 3


def test_the_job_page_has_buttons_links_its_arguments_and_shows_the_traceback_as_code(admin_client):
    order = place_order()
    job = fail("orders.cache_enriched_order", "boom", order_id=order.id)
    page = admin_client.get(reverse("admin:background_failedtask_change", args=[job.id])).content.decode()

    assert 'id="inbox-retry"' in page and 'id="inbox-discard"' in page
    assert f'href="{reverse("admin:orders_order_change", args=[order.id])}"' in page
    assert '<pre class="celeste-traceback">Traceback …</pre>' in page
    assert 'name="_save"' not in page  # nothing to edit


def test_the_discard_button_asks_first(admin_client):
    job = fail("background.ping", "boom")
    url = reverse("admin:background_failedtask_discard", args=[job.id])

    assert "Yes, discard 1 job(s)" in admin_client.post(url).content.decode()
    assert FailedTask.objects.get(id=job.id).status == FailedTaskStatus.OPEN
    admin_client.post(url, {"confirmed": "yes"})
    assert FailedTask.objects.get(id=job.id).status == FailedTaskStatus.DISCARDED


def test_staff_who_may_only_view_the_inbox_cannot_retry_or_discard():
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["view_failedtask", "view_failuregroup"], content_type__app_label="background"
        )
    )
    client = Client()
    client.force_login(viewer)
    job = fail("background.ping", "boom")

    assert (
        'id="inbox-retry"'
        not in client.get(reverse("admin:background_failedtask_change", args=[job.id])).content.decode()
    )
    assert client.post(reverse("admin:background_failedtask_retry", args=[job.id])).status_code == 403
    assert (
        client.post(
            reverse("admin:background_failuregroup_discard", args=[job.group_id]), {"confirmed": "yes"}
        ).status_code
        == 403
    )
    assert FailedTask.objects.get(id=job.id).status == FailedTaskStatus.OPEN


def test_the_admin_is_celestes_with_the_open_count_on_its_home_and_view_site_going_to_the_docs(admin_client):
    fail("background.ping", "boom")
    fail("background.ping", "boom again")

    page = admin_client.get(reverse("admin:index")).content.decode()

    assert "Celeste administration" in page
    assert "Failed jobs open: <strong>2</strong>" in page
    assert f'href="{reverse("swagger-ui")}"' in page


def test_switching_the_relay_off_on_its_switch_page_warns_first(admin_client):
    switch = task_switch_set(task_name=relay_outbox.name, mode="background", by="test")
    url = reverse("admin:background_taskswitch_change", args=[switch.id])
    form = {"task_name": relay_outbox.name, "mode": "off", "note": "", "breaker_error_rate": 0.5}
    form |= {"breaker_min_runs": 20, "breaker_window_seconds": 300, "breaker_fallback": "sync"}
    form |= {"breaker_cooldown_seconds": 300, "breaker_trial_runs": 3}
    form |= {"changes-TOTAL_FORMS": 0, "changes-INITIAL_FORMS": 0}

    warned = admin_client.post(url, form).content.decode()
    assert "control plane&#x27;s own task" in warned and "Yes, switch it off" in warned
    assert TaskSwitch.objects.get(id=switch.id).mode == "background"

    assert admin_client.post(url, {**form, "confirmed": "yes"}).status_code == 302
    assert TaskSwitch.objects.get(id=switch.id).mode == "off"


def test_embeddings_skipped_while_off_are_enqueued_when_the_switch_returns_to_background(
    django_capture_on_commit_callbacks, redis
):
    task_switch_set(task_name=embed_products.name, mode="off", by="test")
    ProductFactory()  # saved while off: its embedding stays pending, no job
    assert not OutboxMessage.objects.filter(task_name=embed_products.name).exists()
    assert ProductEmbedding.objects.exclude(status="ready").exists()

    with django_capture_on_commit_callbacks(execute=True):
        task_switch_set(task_name=embed_products.name, mode="background", by="test")

    assert OutboxMessage.objects.filter(task_name=embed_products.name).count() == 1
    # Other tasks have nothing to redo: switching them back enqueues nothing.
    with django_capture_on_commit_callbacks(execute=True):
        task_switch_set(task_name=ping.name, mode="off", by="test")
        task_switch_set(task_name=ping.name, mode="background", by="test")
    assert not OutboxMessage.objects.filter(task_name=ping.name).exists()
