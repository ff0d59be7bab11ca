"""Popularity: tracking into the Redis Stream, aggregation exactly once, scores, trending."""

import os
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from catalog import popularity, tasks
from catalog.models import PopularityBucket, PopularityScore, PopularityStreamPosition
from celeste.background.queue import enqueue
from celeste.devserver import embedded
from celeste.devserver.processes import BASE_DIR, database_url_for_current_connection
from orders.services import order_cancel, order_popularity_feed

from ..conftest import wait_for
from ..factories import ProductFactory, StoreFactory, place_order

PRODUCTS = "/api/v1/products/"


def counted(product_id, kind="view") -> int:
    return sum(PopularityBucket.objects.filter(product_id=product_id, kind=kind).values_list("count", flat=True))


def stream_fields(redis) -> list[dict]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in redis.xrange(popularity.STREAM)]


@pytest.mark.django_db
def test_a_view_is_appended_to_the_stream_without_a_database_write(api_client, redis, django_assert_num_queries):
    product = ProductFactory()
    with django_assert_num_queries(1):  # the product's active flag, read by primary key
        response = api_client.post(f"{PRODUCTS}{product.id}/view", REMOTE_ADDR="203.0.113.9", HTTP_USER_AGENT="ua")

    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 1, "counted": 1}
    entries = stream_fields(redis)
    assert entries == [{"p": str(product.id), "k": "view", "s": ""}]
    # No personal data: neither the address nor the user agent appears anywhere in Redis.
    dump = b" ".join(redis.keys("*"))
    assert b"203.0.113.9" not in dump and b"ua" not in dump.replace(b"popularity", b"")


@pytest.mark.django_db
def test_the_same_client_counts_once_per_window_others_count_again(api_client, customer_client, redis):
    product = ProductFactory()
    for _ in range(3):
        api_client.post(f"{PRODUCTS}{product.id}/view", REMOTE_ADDR="198.51.100.1", HTTP_USER_AGENT="a")
    api_client.post(f"{PRODUCTS}{product.id}/view", REMOTE_ADDR="198.51.100.2", HTTP_USER_AGENT="a")
    response = customer_client.post(f"{PRODUCTS}{product.id}/view")
    customer_client.post(f"{PRODUCTS}{product.id}/view")

    assert response.json()["counted"] == 1
    assert redis.xlen(popularity.STREAM) == 3
    ttl = redis.ttl(redis.keys(popularity.SEEN_PREFIX + "*")[0])
    assert 0 < ttl <= settings.POPULARITY_DEDUP_WINDOW_SECONDS


@pytest.mark.django_db
def test_unknown_product_is_a_404_and_an_inactive_one_is_not_counted(api_client, redis):
    inactive = ProductFactory(active=False)

    assert api_client.post(f"{PRODUCTS}999999/view").status_code == 404
    assert api_client.post(f"{PRODUCTS}abc/view").status_code == 404
    response = api_client.post(f"{PRODUCTS}{inactive.id}/view")
    assert response.status_code == 202
    assert response.json()["counted"] == 0
    assert redis.exists(popularity.STREAM) == 0


@pytest.mark.django_db
def test_batch_of_events(api_client, redis):
    a, b = ProductFactory(), ProductFactory()
    store = StoreFactory()
    events = [
        {"product": a.id, "kind": "view"},
        {"product": a.id, "kind": "add_to_cart", "store": store.id},
        {"product": b.id, "kind": "search_click"},
        {"product": a.id, "kind": "view"},  # the same again: deduplicated
    ]
    response = api_client.post(f"{PRODUCTS}events", {"events": events}, format="json")

    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 4, "counted": 3}
    assert stream_fields(redis)[1] == {"p": str(a.id), "k": "add_to_cart", "s": str(store.id)}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("events", "index", "field"),
    [
        ([{"product": 1, "kind": "view"}] * 101, "100", None),
        ([{"product": None, "kind": "view"}, {"product": 1, "kind": "stare"}], "1", "kind"),
        ([{"kind": "view"}], "0", "product"),
    ],
)
def test_bad_batches_are_400s_naming_the_event(api_client, redis, events, index, field):
    product = ProductFactory()
    for event in events:
        if event.get("product") == 1:
            event["product"] = product.id
    response = api_client.post(f"{PRODUCTS}events", {"events": events}, format="json")

    assert response.status_code == 400, response.content
    errors = response.json()["events"]
    assert index in errors
    if field:
        assert field in errors[index]
    assert redis.exists(popularity.STREAM) == 0


@pytest.mark.django_db
def test_unknown_product_in_a_batch_names_its_index_and_stores_nothing(api_client, redis):
    product = ProductFactory()
    events = [{"product": product.id, "kind": "view"}, {"product": 999999, "kind": "view"}]
    response = api_client.post(f"{PRODUCTS}events", {"events": events}, format="json")

    assert response.status_code == 400
    assert "product" in response.json()["events"]["1"]
    assert redis.exists(popularity.STREAM) == 0


@pytest.mark.django_db
def test_redis_down_is_a_503_with_retry_after_never_a_silent_202(api_client, redis, embedded_root):
    product = ProductFactory()
    embedded.stop_redis(embedded_root)
    try:
        response = api_client.post(f"{PRODUCTS}{product.id}/view")
    finally:
        embedded.start_redis(embedded_root)

    assert response.status_code == 503
    assert response["Retry-After"]


def track(product, kind="view", actor="x", store=None):
    popularity.popularity_track(actor=actor, events=[popularity.Event(product.id, kind, store and store.id)])


@pytest.mark.django_db(transaction=True)
def test_aggregation_counts_each_entry_once_and_trims_the_stream(redis):
    a, b = ProductFactory(), ProductFactory()
    for actor in "abc":
        track(a, actor=actor)
    track(b, actor="a")
    track(b, kind="add_to_cart", actor="a")

    totals = popularity.popularity_aggregate()
    again = popularity.popularity_aggregate()  # the task running twice

    assert totals["counted"] == 5 and again["counted"] == 0
    assert counted(a.id) == 3 and counted(b.id) == 1 and counted(b.id, "add_to_cart") == 1
    assert redis.xlen(popularity.STREAM) == 0  # what is committed and acknowledged is deleted
    assert redis.xpending(popularity.STREAM, popularity.GROUP)["pending"] == 0
    a.refresh_from_db()
    b.refresh_from_db()
    # Weights: add_to_cart (4) + view (1) > 3 views.
    assert b.popularity > a.popularity > 0


@pytest.mark.django_db(transaction=True)
def test_aggregation_skips_inactive_products_and_counts_a_deleted_stores_events_without_it(redis):
    product, deactivated, deleted = ProductFactory(), ProductFactory(), ProductFactory()
    kept, gone = StoreFactory(), StoreFactory()
    track(product, actor="a", store=kept)
    track(product, actor="b", store=gone)
    track(product, actor="c")  # same bucket as the deleted store's event once it has no store
    track(deactivated, actor="a")
    track(deleted, actor="a")
    deactivated.active = False
    deactivated.save()
    deleted.delete()
    gone.delete()

    totals = popularity.popularity_aggregate()

    assert totals == {**totals, "read": 5, "counted": 3, "skipped": 0}
    rows = PopularityBucket.objects.filter(product_id=product.id).values_list("store_id", "count")
    assert sorted(rows, key=str) == sorted([(kept.id, 1), (None, 2)], key=str)
    assert counted(deactivated.id) == 0 and counted(deleted.id) == 0
    assert redis.xlen(popularity.STREAM) == 0


@pytest.mark.django_db(transaction=True)
def test_committed_entries_are_skipped_not_counted_again(redis):
    """The kill between commit and XACK, in process: the batch commits, the ack is lost
    (the entries stay pending for a consumer that is gone); the next run claims them and
    acknowledges them without counting."""
    product = ProductFactory()
    for actor in "abcd":
        track(product, actor=actor)
    r = popularity.client()
    popularity._group_ensure(r)
    real_ack = popularity._ack
    popularity._ack = lambda *args: None  # the process "died" right after commit
    try:
        popularity.popularity_aggregate_batch(r, consumer="dead-consumer")
    finally:
        popularity._ack = real_ack
    assert redis.xpending(popularity.STREAM, popularity.GROUP)["pending"] == 4

    totals = popularity.popularity_aggregate()

    assert totals == {**totals, "read": 4, "counted": 0, "skipped": 4}
    assert counted(product.id) == 4
    assert redis.xpending(popularity.STREAM, popularity.GROUP)["pending"] == 0


KILL_AFTER_COMMIT = textwrap.dedent(
    """
    import os, signal, django
    django.setup()
    from catalog import popularity
    r = popularity.client()
    popularity._group_ensure(r)
    # SIGKILL ourselves where the acknowledgement would start: after the commit.
    popularity._ack = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    popularity.popularity_aggregate_batch(r, consumer=popularity.consumer_name())
    """
)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_consumer_killed_between_commit_and_ack_never_double_counts(start_worker, redis):
    """An honest kill, not a simulation of one: a real process runs the production batch up
    to its commit and is SIGKILLed where the XACK would go (the only code replaced is the
    ack itself, by the kill). Its entries stay pending in the group under a dead consumer.
    Then a real Celery worker runs the periodic task twice: the first claims the dead
    consumer's entries (XAUTOCLAIM), finds them at or below the committed position and
    acknowledges them without counting, then counts the newer ones; the second counts
    nothing. Counts equal the distinct events exactly."""
    products = [ProductFactory() for _ in range(3)]
    for i in range(30):
        track(products[i % 3], actor=f"actor-{i}")
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_current_connection(),
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "celeste.settings.test"),
    }
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_COMMIT], cwd=BASE_DIR, env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert redis.xpending(popularity.STREAM, popularity.GROUP)["pending"] == 30
    assert sum(counted(p.id) for p in products) == 30  # committed before the kill
    for i in range(30, 36):  # events that arrive after the kill
        track(products[i % 3], actor=f"actor-{i}")
    newest = redis.xrevrange(popularity.STREAM, count=1)[0][0].decode()

    start_worker()
    for _ in range(2):
        with transaction.atomic():
            message = enqueue(tasks.aggregate_popularity)
        wait_for(lambda m=message: not type(m).objects.filter(id=m.id).exists(), timeout=60, message="aggregation job")

    assert [counted(p.id) for p in products] == [12, 12, 12]
    assert redis.xpending(popularity.STREAM, popularity.GROUP)["pending"] == 0
    position = PopularityStreamPosition.objects.get(group=popularity.GROUP).last_id
    assert position == newest
    assert redis.xlen(popularity.STREAM) == 0


@pytest.mark.django_db(transaction=True)
def test_orders_feed_popularity_once_and_cancelling_takes_it_back(redis):
    order = place_order(lines=(("2.50", 1), ("1.00", 3)))
    product_ids = list(order.items.values_list("product_id", flat=True))

    order_popularity_feed(order_id=order.id)
    order_popularity_feed(order_id=order.id)  # twice: still once
    assert [counted(p, "order") for p in product_ids] == [1, 1]

    order_cancel(order_id=order.id)
    order_popularity_feed(order_id=order.id)
    order_popularity_feed(order_id=order.id)
    assert [counted(p, "order") for p in product_ids] == [0, 0]


@pytest.mark.django_db(transaction=True)
def test_trending_is_served_from_the_cache_and_rebuilt_from_scores_when_cold(api_client, redis):
    store = StoreFactory()
    hot, warm, cold = ProductFactory(category="tea"), ProductFactory(category="tea"), ProductFactory()
    for actor in "abcd":
        track(hot, actor=actor, store=store)
    track(warm, actor="a")
    track(cold, actor="a", kind="search_click")
    popularity.popularity_aggregate()

    body = api_client.get(f"{PRODUCTS}trending").json()
    assert [item["id"] for item in body["results"]] == [hot.id, cold.id, warm.id]
    assert [i["id"] for i in api_client.get(f"{PRODUCTS}trending?category=tea&limit=1").json()["results"]] == [hot.id]
    assert [i["id"] for i in api_client.get(f"{PRODUCTS}trending?store={store.id}").json()["results"]] == [hot.id]

    # From the cache: a change in Postgres is not seen until the next aggregation...
    PopularityScore.objects.all().delete()
    assert len(api_client.get(f"{PRODUCTS}trending").json()["results"]) == 3
    # ...and a cold cache is rebuilt from the scores, not from raw events.
    redis.delete(*redis.keys(popularity.TRENDING_PREFIX + "*"))
    assert api_client.get(f"{PRODUCTS}trending").json() == {"count": 0, "results": []}
    assert redis.ttl(redis.keys(popularity.TRENDING_PREFIX + "*")[0]) > 0


@pytest.mark.django_db
def test_trending_bad_input(api_client, redis):
    assert "store" in api_client.get(f"{PRODUCTS}trending?store=999999").json()
    assert "limit" in api_client.get(f"{PRODUCTS}trending?limit=500").json()


@pytest.mark.django_db(transaction=True)
def test_product_list_orders_by_popularity(api_client, redis):
    low, high = ProductFactory(), ProductFactory()
    track(high, actor="a")
    track(high, actor="b")
    track(low, actor="a")
    popularity.popularity_aggregate()

    ids = [p["id"] for p in api_client.get(f"{PRODUCTS}?ordering=-popularity").json()["results"]]
    assert ids[:2] == [high.id, low.id]


@pytest.mark.django_db(transaction=True)
def test_decay_halves_a_score_per_half_life():
    product = ProductFactory()
    now = timezone.now()
    PopularityBucket.objects.create(product=product, bucket=now, kind="view", count=4)
    PopularityBucket.objects.create(
        product=product, bucket=now - timedelta(hours=settings.POPULARITY_HALF_LIFE_HOURS), kind="view", count=4
    )
    popularity.popularity_scores_recompute()
    product.refresh_from_db()
    assert product.popularity == pytest.approx(4 + 2, rel=0.01)


@pytest.mark.django_db(transaction=True)
def test_retention_sweep_drops_old_entries_and_buckets(redis):
    product = ProductFactory()
    old = timezone.now() - timedelta(days=settings.POPULARITY_RETENTION_DAYS + 1)
    redis.xadd(popularity.STREAM, {"p": product.id, "k": "view", "s": ""}, id=f"{int(old.timestamp() * 1000)}-0")
    track(product)
    PopularityBucket.objects.create(product=product, bucket=old, kind="view", count=1)

    result = tasks.sweep_popularity()

    assert result == {"stream_trimmed": 1, "buckets_deleted": 1}
    assert redis.xlen(popularity.STREAM) == 1


@pytest.mark.django_db(transaction=True)
def test_rebuild_popularity_command(redis, capsys):
    product = ProductFactory()
    PopularityBucket.objects.create(product=product, bucket=timezone.now(), kind="order", count=1)

    call_command("rebuild_popularity", "--dry-run")
    product.refresh_from_db()
    assert product.popularity == 0
    call_command("rebuild_popularity", "--since", (timezone.now() - timedelta(days=1)).date().isoformat())
    product.refresh_from_db()
    assert product.popularity == pytest.approx(settings.POPULARITY_WEIGHTS["order"], rel=0.01)


@pytest.mark.django_db
def test_admin_shows_popularity_and_recent_activity(client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    product = ProductFactory()
    PopularityBucket.objects.create(product=product, bucket=timezone.now(), kind="view", count=7)

    page = client.get(f"/admin/catalog/product/{product.id}/change/").content.decode()
    assert "Recent activity" in page and "view: 7" in page
