"""Log lines keep their context: every ``extra`` field is printed, in JSON or on the
console, and a task's lines carry its task id, task name and the id of the request
that started it, through the outbox into a real worker and on into the jobs it enqueues."""

import json
import logging

import pytest

from catalog.tasks import embed_products
from celeste.background.models import FailedTask, OutboxMessage
from celeste.background.queue import enqueue
from celeste.background.tasks import ping
from celeste.logs import ConsoleFormatter, ContextFilter, JsonLineFormatter, request_id
from notifications import services
from notifications.tasks import dispatch_order_event, send_email
from orders.models import Order

from .conftest import wait_for
from .factories import UserFactory, place_order, reach


def record(event: str, **extra) -> logging.LogRecord:
    made = logging.getLogger("celeste.test").makeRecord(
        "celeste.test", logging.ERROR, __file__, 1, event, (), None, extra=extra
    )
    ContextFilter().filter(made)
    return made


@pytest.fixture
def in_request():
    token = request_id.set("req-1")
    yield "req-1"
    request_id.reset(token)


def test_the_console_format_shows_every_extra_field_as_key_value(in_request):
    line = ConsoleFormatter().format(record("task.failed", task_name="t.x", failed_task_id=7, error="Boom: a b"))

    assert line.endswith(
        ' ERROR celeste.test task.failed task_name=t.x failed_task_id=7 error="Boom: a b" request_id=req-1'
    )


def test_the_console_format_keeps_a_traceback_below_the_line_with_the_fields():
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        made = logging.getLogger("celeste.test").makeRecord(
            "celeste.test", logging.ERROR, __file__, 1, "job.crashed", (), sys.exc_info(), extra={"job_id": "j1"}
        )

    first, *rest = ConsoleFormatter().format(made).splitlines()

    assert first.endswith("job.crashed job_id=j1")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: bad"


def test_the_json_format_is_one_object_with_the_event_and_every_field(in_request):
    line = JsonLineFormatter().format(record("outbox.relayed", count=3, recovered=0))

    parsed = json.loads(line)
    assert {k: parsed[k] for k in ("level", "logger", "event", "count", "recovered", "request_id")} == {
        "level": "ERROR",
        "logger": "celeste.test",
        "event": "outbox.relayed",
        "count": 3,
        "recovered": 0,
        "request_id": "req-1",
    }
    assert "time" in parsed and "\n" not in line


def test_outside_a_request_and_a_task_no_context_is_added():
    made = record("worker.ready")

    assert not {"request_id", "task_id", "task_name"} & set(vars(made))


def test_a_field_passed_with_the_event_wins_over_the_context(in_request):
    assert record("web.event", request_id="mine").request_id == "mine"


def test_local_and_test_settings_log_to_the_console(settings):
    assert settings.LOG_FORMAT == "console"
    assert settings.LOGGING["handlers"]["console"]["formatter"] == "console"
    assert settings.LOGGING["handlers"]["console"]["filters"] == ["idle_ticks", "context"]


# --- through a real worker ----------------------------------------------------------


def json_lines(worker) -> list[dict]:
    """The worker's JSON log lines (its start-up banner is plain text)."""
    return [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]


def lines_of(worker, task) -> list[dict]:
    return [line for line in json_lines(worker) if line.get("task_name") == task.name]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_failed_task_logs_its_task_id_task_name_and_error(start_worker, channels_env, smtp_server, set_switch):
    set_switch(embed_products.name, "off")  # no model loading in the way
    # Refused until the retries (TASK_MAX_RETRIES=1 in the worker) run out: into the inbox.
    smtp_server.fail_with = "451 4.3.0 Try again later"
    services.notification_dispatch_order_event(
        order_id=reach(place_order(user=UserFactory(email="a@example.com")), "paid").id, status="paid"
    )
    job = OutboxMessage.objects.get(task_name=send_email.name)

    worker = start_worker(LOG_FORMAT="json", **channels_env)

    failed = wait_for(lambda: FailedTask.objects.filter(task_name=send_email.name).first(), message="the inbox row")
    line = wait_for(
        lambda: next((x for x in lines_of(worker, send_email) if x["event"] == "task.failed"), None),
        message="the task.failed line",
    )
    assert line["level"] == "ERROR"
    assert line["task_id"] == str(job.id) == failed.task_id
    assert line["failed_task_id"] == failed.id
    assert line["error"].startswith("TransientError:") and "451" in line["error"]
    assert "request_id" not in line  # no request started this job


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_request_id_follows_an_order_from_the_request_to_the_email(
    start_worker, channels_env, smtp_server, staff_client, set_switch
):
    set_switch(embed_products.name, "off")
    order = place_order(user=UserFactory(email="grace@example.com"))

    response = staff_client.post(f"/api/v1/orders/{order.id}/mark-paid/", headers={"X-Request-ID": "test-123"})

    assert response.status_code == 200 and response["X-Request-ID"] == "test-123"
    assert OutboxMessage.objects.get(task_name=dispatch_order_event.name).request_id == "test-123"
    enqueue(ping)  # no request: queued behind the request's jobs, in the same pool child

    worker = start_worker(LOG_FORMAT="json", **channels_env)

    wait_for(lambda: smtp_server.recipients() == ["grace@example.com"], message="the email")
    # dispatch_order_event ran with the request's id, and the send_email job it enqueued inherited it.
    wait_for(lambda: any("succeeded" in x["event"] for x in lines_of(worker, send_email)), message="send_email done")
    for task in (dispatch_order_event, send_email):
        lines = lines_of(worker, task)
        assert lines, task.name
        assert {(x["request_id"], bool(x["task_id"])) for x in lines} == {("test-123", True)}, lines
    ping_lines = wait_for(lambda: lines_of(worker, ping), message="the ping's lines")
    assert not any("request_id" in x for x in ping_lines)  # the request's id did not leak into the next job
    assert Order.objects.get(id=order.id).status == "paid"


def test_idle_tick_filter_drops_only_celerys_lines_of_quiet_ticks_that_found_nothing():
    import logging

    from celeste.background.tasks import ping, relay_outbox
    from celeste.logs import IdleTickFilter

    def record(logger, name, **args):
        line = logging.LogRecord(logger, logging.INFO, __file__, 1, "Task %(name)s", None, None)
        line.args = {"name": name, **args}
        return line

    keep = IdleTickFilter().filter
    assert not keep(record("celery.worker.strategy", relay_outbox.name))
    assert not keep(record("celery.app.trace", relay_outbox.name, return_value="0"))
    assert keep(record("celery.app.trace", relay_outbox.name, return_value="3"))
    assert keep(record("celery.worker.strategy", ping.name))
    assert keep(record("celery.app.trace", ping.name, return_value="0"))
