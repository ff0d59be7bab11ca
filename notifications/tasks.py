from celery import shared_task

from celeste.background.errors import PermanentError, TransientError
from celeste.background.tasks import CelesteTask

from . import campaigns, services
from .channels import TransientDeliveryError


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


@shared_task(name="notifications.send_email", base=CelesteTask, bind=True)
def send_email(self, *, delivery_id: int) -> str:
    return _send(self, delivery_id)


@shared_task(name="notifications.send_push", base=CelesteTask, bind=True)
def send_push(self, *, delivery_id: int) -> str:
    return _send(self, delivery_id)


@shared_task(name="notifications.campaign_fan_out", base=CelesteTask)
def campaign_fan_out(*, campaign_id: int) -> int:
    return campaigns.campaign_fan_out(campaign_id=campaign_id)


@shared_task(name="notifications.recover_campaigns", base=CelesteTask)
def recover_campaigns() -> int:
    return campaigns.campaigns_recover()


@shared_task(name="notifications.campaign_send_chunk", base=CelesteTask, bind=True)
def campaign_send_chunk(self, *, campaign_id: int, recipient_ids: list[int]) -> dict:
    try:
        return campaigns.campaign_send_chunk(campaign_id=campaign_id, recipient_ids=recipient_ids)
    except campaigns.CampaignTemplateError as exc:
        raise PermanentError(str(exc)) from exc
