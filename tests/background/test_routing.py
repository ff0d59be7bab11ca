"""Each task runs on the queue declared where it is defined (celeste_task(queue=…))."""

from catalog.tasks import embed_products
from celeste.background.tasks import relay_outbox
from celeste.celery import app
from notifications.tasks import send_email


def queue_of(task_name: str) -> str:
    return app.amqp.router.route({}, task_name)["queue"].name


def test_a_task_goes_to_the_queue_it_declares():
    assert queue_of(embed_products.name) == "slow"
    assert queue_of(send_email.name) == queue_of(relay_outbox.name) == "fast"


def test_a_task_that_is_not_ours_goes_to_the_default_queue():
    assert queue_of("celery.backend_cleanup") == "fast"
