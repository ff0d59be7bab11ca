"""enqueue(): outbox in the caller's transaction, publish after commit, switches."""

import pytest
from django.db import transaction

from catalog import services
from catalog.models import EmbeddingStatus, ProductEmbedding
from catalog.tasks import embed_products
from celeste.background import switches
from celeste.background.models import OutboxMessage, TaskSwitch
from celeste.background.queue import enqueue, outbox_relay
from celeste.devserver import embedded

from ..conftest import pending_jobs, published, queued_messages
from ..factories import ProductFactory, StockLevelFactory, StoreFactory

EMBED = "catalog.embed_products"
pytestmark = pytest.mark.django_db(transaction=True)


def test_outbox_row_is_written_in_the_transaction_and_published_after_commit(redis):
    with transaction.atomic():
        ProductFactory()
        assert OutboxMessage.objects.count() == 1
        assert queued_messages(redis) == 0

    assert queued_messages(redis) == 1
    # The row is the job's record until a worker finishes it.
    assert OutboxMessage.objects.get().state == "published"


def test_rolled_back_transaction_enqueues_nothing(redis):
    with pytest.raises(RuntimeError), transaction.atomic():
        ProductFactory()
        raise RuntimeError("rollback")

    assert OutboxMessage.objects.count() == 0
    assert queued_messages(redis) == 0


def test_saving_a_product_without_a_text_change_enqueues_nothing(redis):
    product = ProductFactory(name="Oat Milk 1L")
    published()
    redis.flushall()

    jobs_before = OutboxMessage.objects.count()
    services.product_update(product=product, price="3.99", active=True)
    published()

    assert queued_messages(redis) == 0
    assert OutboxMessage.objects.count() == jobs_before


def test_changing_the_name_enqueues_an_embedding(redis):
    product = ProductFactory(name="Oat Milk 1L")
    published()
    redis.flushall()

    services.product_update(product=product, name="Oat Drink 1L")

    assert queued_messages(redis) == 1


def test_changing_stock_enqueues_nothing(redis):
    level = StockLevelFactory(quantity=5)
    published()
    redis.flushall()

    services.stock_level_set(product=level.product, store=level.store, quantity=50)

    assert queued_messages(redis) == 0


def test_broker_down_keeps_the_message_in_the_outbox_until_the_relay_publishes_it(redis, embedded_root):
    embedded.stop_redis(embedded_root)

    ProductFactory()
    published()

    message = OutboxMessage.objects.get()
    assert message.task_name == EMBED
    assert message.publish_attempts == 1
    assert message.last_error

    embedded.start_redis(embedded_root)
    assert outbox_relay() == 1
    assert pending_jobs() == 0
    assert queued_messages(redis) == 1


def test_relay_keeps_messages_while_the_broker_is_still_down(redis, embedded_root):
    embedded.stop_redis(embedded_root)
    ProductFactory()
    published()

    assert outbox_relay() == 0

    assert OutboxMessage.objects.get().publish_attempts == 2


def test_switch_off_skips_and_counts(redis, set_switch):
    set_switch(EMBED, "off")

    ProductFactory()
    ProductFactory()

    assert queued_messages(redis) == 0
    assert OutboxMessage.objects.count() == 0
    assert TaskSwitch.objects.get(task_name=EMBED).skipped_count == 2


def test_switch_sync_embeds_inline_right_after_commit(redis, set_switch):
    set_switch(EMBED, "sync")

    product = ProductFactory(name="Sourdough Bread 800g")

    embedding = ProductEmbedding.objects.get(product=product)
    assert embedding.status == EmbeddingStatus.READY
    assert embedding.content_hash == product.content_hash
    assert queued_messages(redis) == 0


def test_switch_change_reaches_a_process_once_its_cache_expires(settings, redis):
    settings.TASK_SWITCH_CACHE_SECONDS = 60
    switches.forget_cached_switches()
    assert switches.task_mode(EMBED) == "background"

    TaskSwitch.objects.update_or_create(task_name=EMBED, defaults={"mode": "off"})
    assert switches.task_mode(EMBED) == "background"  # still cached

    settings.TASK_SWITCH_CACHE_SECONDS = 0
    assert switches.task_mode(EMBED) == "off"


def test_a_task_name_is_refused_the_task_itself_is_needed(redis):
    with pytest.raises(TypeError, match="takes a task"):
        enqueue(EMBED)


def test_an_unregistered_task_is_refused(redis):
    class Unregistered:
        name = "catalog.no_such_task"

    with pytest.raises(ValueError, match="Unknown task"):
        enqueue(Unregistered())


def test_model_instances_cannot_be_enqueued(redis):
    store = StoreFactory()

    with pytest.raises(TypeError):
        enqueue(embed_products, store=store)


def test_the_relay_running_twice_publishes_each_message_once(redis, embedded_root):
    embedded.stop_redis(embedded_root)
    ProductFactory()
    ProductFactory()
    published()
    embedded.start_redis(embedded_root)

    assert outbox_relay() == 2  # one published, one coalesced into it
    assert outbox_relay() == 0
    assert pending_jobs() == 0
    assert queued_messages(redis) == 1


def test_the_relay_coalesces_like_the_publisher(redis, embedded_root):
    """During an outage 100 creates left 100 embed rows; one message does them all."""
    embedded.stop_redis(embedded_root)
    for _ in range(100):
        ProductFactory()
    published()
    assert pending_jobs() == 100
    embedded.start_redis(embedded_root)

    assert outbox_relay() == 100

    assert queued_messages(redis) == 1
    assert list(OutboxMessage.objects.values_list("task_name", "published_count")) == [(EMBED, 1)]
