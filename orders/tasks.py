from celery import shared_task

from celeste.background.tasks import CelesteTask

from .enriched import enriched_order_refresh


@shared_task(name="orders.cache_enriched_order", base=CelesteTask)
def cache_enriched_order(*, order_id: int) -> bool:
    return enriched_order_refresh(order_id=order_id)
