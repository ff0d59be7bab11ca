from celery import shared_task

from celeste.background.errors import PermanentError, TransientError
from celeste.background.tasks import CelesteTask

from . import campaigns, services
from .channels import TransientDeliveryError


# Retry from the inbox redoes the work as is: the dispatch is one transaction, so
# a failed run left nothing behind (no notification, no deliveries) to get in its way.
@shared_task(name="notifications.dispatch_order_event", base=CelesteTask)
def dispatch_order_event(*, order_id: int, status: str) -> int | None:
    notification = services.notification_dispatch_order_event(order_id=order_id, status=status)
    return notification.id if notification else None


def _send(task, delivery_id: int) -> str:
    try:
        return services.delivery_send(delivery_id=delivery_id)
    except TransientDeliveryError as exc:
        if task.request.retries >= task.max_retries:
            services.delivery_mark_failed(delivery_id=delivery_id, error=str(exc))
        raise TransientError(str(exc)) from exc


# Running out of retries marks the delivery failed; a retry from the inbox makes it pending again.
@shared_task(name="notifications.send_email", base=CelesteTask, bind=True, on_inbox_retry=services.delivery_reopen)
def send_email(self, *, delivery_id: int) -> str:
    return _send(self, delivery_id)


@shared_task(name="notifications.send_push", base=CelesteTask, bind=True, on_inbox_retry=services.delivery_reopen)
def send_push(self, *, delivery_id: int) -> str:
    return _send(self, delivery_id)


# Retry from the inbox redoes the work as is: the campaign is still "sending"
# (it finishes only when no recipient is queued), recipient rows are created with
# ignore_conflicts, and chunks go out for every recipient still queued.
@shared_task(name="notifications.campaign_fan_out", base=CelesteTask)
def campaign_fan_out(*, campaign_id: int) -> int:
    return campaigns.campaign_fan_out(campaign_id=campaign_id)


# Re-runnable as is: it looks for stuck recipients each time it runs.
@shared_task(name="notifications.recover_campaigns", base=CelesteTask)
def recover_campaigns() -> int:
    return campaigns.campaigns_recover()


# A 4xx or a dropped connection puts the unsent back to queued by itself; a retry
# from the inbox also queues again those the server refused (5xx).
@shared_task(name="notifications.campaign_send_chunk", base=CelesteTask, bind=True,
             on_inbox_retry=campaigns.campaign_recipients_requeue)
def campaign_send_chunk(self, *, campaign_id: int, recipient_ids: list[int]) -> dict:
    try:
        return campaigns.campaign_send_chunk(campaign_id=campaign_id, recipient_ids=recipient_ids)
    except campaigns.CampaignTemplateError as exc:
        raise PermanentError(str(exc)) from exc
