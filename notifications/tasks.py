"""Thin tasks: ids in, a service call out.

services and campaigns import this module (to enqueue), so it reads them only
when a task runs; that is why the inbox-retry hooks are small lambdas.
"""

from django.conf import settings

from celeste.background.errors import PermanentError, TransientError
from celeste.background.tasks import celeste_task

from . import campaigns, services, stream
from .channels import TransientDeliveryError


# Retry from the inbox redoes the work as is: the dispatch is one transaction, so
# a failed run left nothing behind (no notification, no deliveries) to get in its way.
# One per order event (and one send per delivery): their rows (notification, deliveries)
# are the record, nobody reads a stored result, so none is written (a failure still
# reaches the inbox).
@celeste_task("notifications.dispatch_order_event", ignore_result=True)
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
@celeste_task(
    "notifications.send_email",
    bind=True,
    ignore_result=True,
    on_inbox_retry=lambda **job: services.delivery_reopen(**job),
)
def send_email(self, *, delivery_id: int) -> str:
    return _send(self, delivery_id)


@celeste_task(
    "notifications.send_push",
    bind=True,
    ignore_result=True,
    on_inbox_retry=lambda **job: services.delivery_reopen(**job),
)
def send_push(self, *, delivery_id: int) -> str:
    return _send(self, delivery_id)


# Retry from the inbox redoes the work as is: the campaign is still "sending"
# (it finishes only when no recipient is queued), recipient rows are created with
# ignore_conflicts, and chunks go out for every recipient still queued.
@celeste_task("notifications.campaign_fan_out")
def campaign_fan_out(*, campaign_id: int) -> int:
    return campaigns.campaign_fan_out(campaign_id=campaign_id)


# Re-runnable as is: it looks for stuck recipients each time it runs.
@celeste_task("notifications.recover_campaigns")
def recover_campaigns() -> int:
    """Fails campaign recipients a killed worker left "sending" (never sent twice), so campaigns finish."""
    return campaigns.campaigns_recover()


# A 4xx or a dropped connection puts the unsent back to queued by itself; a retry
# from the inbox also queues again those the server refused (5xx).
@celeste_task(
    "notifications.campaign_send_chunk",
    bind=True,
    max_concurrency=settings.CAMPAIGN_MAX_CONCURRENT_CHUNKS,
    on_inbox_retry=lambda **job: campaigns.campaign_recipients_requeue(**job),
)
def campaign_send_chunk(self, *, campaign_id: int, recipient_ids: list[int]) -> dict:
    try:
        return campaigns.campaign_send_chunk(campaign_id=campaign_id, recipient_ids=recipient_ids)
    except campaigns.CampaignTemplateError as exc:
        raise PermanentError(str(exc)) from exc


# Re-runnable as is: it deletes whatever is past the retention window when it runs.
@celeste_task("notifications.sweep_stream_events")
def sweep_stream_events() -> int:
    return stream.stream_events_sweep()
