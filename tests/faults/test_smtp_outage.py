"""The SMTP server refuses mail (451) until the email jobs run out of retries.

The jobs land in the failed-task inbox and their deliveries are marked failed.
When the server takes mail again, staff retry the inbox rows: every email must
then arrive, exactly once. A retry from the inbox has to restore the state the job
needs (the failed delivery becomes pending again, via the task's
``on_inbox_retry``); otherwise the retried job finds a failed delivery, does
nothing, and the email never arrives.
"""

import pytest

from celeste.background.models import FailedTask, FailedTaskStatus
from celeste.background.services import failed_task_retry
from notifications.models import Channel, Delivery, DeliveryStatus

from ..conftest import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.faults, pytest.mark.django_db(transaction=True)]
SEND_EMAIL = "notifications.send_email"


def test_emails_failed_into_the_inbox_arrive_once_when_retried_after_the_outage(ledger, fault_worker, smtp_server):
    # Given an SMTP server that refuses every message, and a worker whose email jobs
    # run out of retries (WORKER_ENV: TASK_MAX_RETRIES=1)
    smtp_server.fail_with = "451 4.3.0 Try again later"
    ledger.event(f"SMTP refuses mail: {smtp_server.fail_with}")
    fault_worker()
    ledger.create(products=10, orders=10, stock_changes=5)
    orders = len(ledger.order_ids)

    inbox = FailedTask.objects.filter(task_name=SEND_EMAIL, status=FailedTaskStatus.OPEN)
    wait_for(lambda: inbox.count() == orders, timeout=60, message="every email job in the inbox")
    ledger.event(f"{inbox.count()} email jobs in the inbox after {smtp_server.refused} refusals")
    failed = Delivery.objects.filter(
        notification__order_id__in=ledger.order_ids, channel=Channel.EMAIL, status=DeliveryStatus.FAILED
    )
    assert failed.count() == orders
    assert smtp_server.messages == []

    # When the server takes mail again and staff retry the inbox rows
    smtp_server.fail_with = None
    ledger.fault_over("SMTP takes mail again")
    assert failed_task_retry(failed_task_ids=list(inbox.values_list("id", flat=True))) == orders
    ledger.event(f"retried {orders} inbox rows")

    # Then every email arrives, once
    ledger.check(timeout=60)
