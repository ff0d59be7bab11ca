"""CelesteTask: retries, permanent errors and the failed-task inbox."""

import pytest
from celery import shared_task

from celeste.background.errors import PermanentError
from celeste.background.models import FailedTask, FailedTaskStatus, OutboxMessage
from celeste.background.services import failed_task_discard, failed_task_retry
from celeste.background.tasks import CelesteTask

from ..conftest import queued_messages

CALLS = []


@shared_task(name="tests.flaky", base=CelesteTask, max_retries=2, retry_backoff=False)
def flaky(*, fail_times: int) -> str:
    CALLS.append(fail_times)
    if len(CALLS) <= fail_times:
        raise ConnectionError("peer unavailable")
    return "done"


@shared_task(name="tests.permanent", base=CelesteTask, max_retries=5)
def permanent(*, record_id: int) -> None:
    CALLS.append(record_id)
    raise PermanentError(f"record {record_id} is invalid")


def _restore(*, record_id: int) -> None:
    # What the hook saw: its arguments, and whether the job was already enqueued.
    if record_id < 0:
        raise ValueError(f"record {record_id} cannot be restored")
    CALLS.append(("restore", record_id, OutboxMessage.objects.filter(task_name="tests.restorable").count()))


@shared_task(name="tests.restorable", base=CelesteTask, on_inbox_retry=_restore)
def restorable(*, record_id: int) -> None:
    CALLS.append(("run", record_id))


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.clear()


@pytest.mark.django_db
def test_transient_error_is_retried_and_then_succeeds():
    result = flaky.apply(kwargs={"fail_times": 2})

    assert result.get() == "done"
    assert len(CALLS) == 3
    assert not FailedTask.objects.exists()


@pytest.mark.django_db
def test_exhausted_retries_land_in_the_inbox_with_arguments_error_and_attempts():
    flaky.apply(kwargs={"fail_times": 10})

    failed = FailedTask.objects.get()
    assert failed.task_name == "tests.flaky"
    assert failed.kwargs == {"fail_times": 10}
    assert "ConnectionError: peer unavailable" in failed.error
    assert "Traceback" in failed.traceback
    assert failed.attempts == 3
    assert failed.permanent is False
    assert failed.status == FailedTaskStatus.OPEN


@pytest.mark.django_db
def test_permanent_error_goes_straight_to_the_inbox_without_retries():
    permanent.apply(kwargs={"record_id": 7})

    assert CALLS == [7]
    failed = FailedTask.objects.get()
    assert failed.permanent is True
    assert failed.attempts == 1
    assert "record 7 is invalid" in failed.error


@pytest.mark.django_db(transaction=True)
def test_retry_re_enqueues_open_jobs_with_their_arguments(redis):
    job = FailedTask.objects.create(task_name="catalog.embed_products", kwargs={}, error="boom")
    discarded = FailedTask.objects.create(
        task_name="catalog.embed_products", kwargs={}, error="old", status=FailedTaskStatus.DISCARDED
    )

    assert failed_task_retry(failed_task_ids=[job.id, discarded.id]) == 1

    job.refresh_from_db()
    assert job.status == FailedTaskStatus.RETRIED
    assert job.resolved_at is not None
    assert queued_messages(redis, "slow") == 1
    assert OutboxMessage.objects.get().state == "published"


@pytest.mark.django_db
def test_discard_closes_open_jobs_only():
    job = FailedTask.objects.create(task_name="catalog.embed_products", kwargs={}, error="boom")

    assert failed_task_discard(failed_task_ids=[job.id]) == 1
    assert failed_task_discard(failed_task_ids=[job.id]) == 0

    job.refresh_from_db()
    assert job.status == FailedTaskStatus.DISCARDED


@pytest.mark.django_db
def test_retry_calls_the_tasks_inbox_hook_with_the_job_arguments_before_enqueueing():
    job = FailedTask.objects.create(task_name="tests.restorable", kwargs={"record_id": 3}, error="boom")

    failed_task_retry(failed_task_ids=[job.id])

    assert CALLS == [("restore", 3, 0)]
    assert [m.kwargs for m in OutboxMessage.objects.filter(task_name="tests.restorable")] == [{"record_id": 3}]


@pytest.mark.django_db
def test_a_failing_inbox_hook_leaves_the_job_open_and_enqueues_nothing():
    job = FailedTask.objects.create(task_name="tests.restorable", kwargs={"record_id": -1}, error="boom")

    with pytest.raises(ValueError, match="cannot be restored"):
        failed_task_retry(failed_task_ids=[job.id])

    job.refresh_from_db()
    assert job.status == FailedTaskStatus.OPEN
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_with_the_switch_off_the_inbox_hook_is_not_called(set_switch):
    job = FailedTask.objects.create(task_name="tests.restorable", kwargs={"record_id": 3}, error="boom")
    set_switch("tests.restorable", "off")

    failed_task_retry(failed_task_ids=[job.id])

    assert CALLS == []
    assert FailedTask.objects.get(id=job.id).status == FailedTaskStatus.RETRIED
