"""Orders: detail with all includes pre-cached vs cold; a 200-order list with includes vs naive per-object access.

In-process DRF APIClient. The detail is one customer's order of 5 items; "cold"
deletes its Redis entry before each request, so the view builds it from
Postgres; "pre-cached" is what the task stored after payment. The list is 200
orders of 3 items each with ?include=products,stores,addresses, compared with
the same serializer fed by a queryset without select_related/prefetch (every
relation loaded per object).
"""

import json
import time
from contextlib import contextmanager
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.test import APIClient

from bench import Result, p50, report, reset_catalog
from catalog import services as catalog
from orders import services as orders
from orders.api.serializers import INCLUDES, OrderSerializer
from orders.cache import enriched_order_forget
from orders.enriched import enriched_order_refresh
from orders.models import Order

ALL = ",".join(INCLUDES)


def reset_orders() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE orders_payment, orders_orderitem, orders_order, orders_address RESTART IDENTITY CASCADE"
        )
    reset_catalog()


def make_orders(user, *, count: int, items: int) -> list[Order]:
    store = catalog.store_create(code=f"bench-{time.time_ns()}", name="Bench Store")
    products = [
        catalog.product_create(
            sku=f"ORD-{time.time_ns()}-{i}",
            name=f"Bench product {i}",
            description="Something good.",
            price=Decimal("2.50") + i,
        )
        for i in range(items * 4)
    ]
    for product in products:
        catalog.stock_level_set(product=product, store=store, quantity=1_000_000)
    address = orders.address_create(
        user=user, recipient="Bench", line1="Road 1", city="Berlin", postal_code="10117", country="DE"
    )
    placed = []
    for n in range(count):
        chosen = [products[(n + k) % len(products)] for k in range(items)]
        placed.append(orders.order_place(user=user, store=store, address=address, items=[(p, 2) for p in chosen]))
    return placed


@contextmanager
def count_queries():
    """Counts every SQL statement this connection executes (survives reconnects)."""
    counted = []

    def wrapper(execute, sql, params, many, context):
        counted.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield counted


def run(quick: bool) -> list[Result]:
    samples, list_rounds = (60, 5) if quick else (300, 20)
    reset_orders()
    user = get_user_model().objects.create_user(username=f"bench-customer-{time.time_ns()}", is_staff=True)
    client = APIClient()
    client.force_authenticate(user)

    (order,) = make_orders(user, count=1, items=5)
    orders.order_mark_paid(order_id=order.id)
    url = f"/api/v1/orders/{order.id}/?include={ALL}"
    cached, cold = [], []
    for i in range(samples + 10):
        for mode in ("cached", "cold") if i % 2 else ("cold", "cached"):
            if mode == "cached":
                enriched_order_refresh(order_id=order.id)
            else:
                enriched_order_forget(order.id)
            start = time.perf_counter()
            response = client.get(url)
            elapsed = time.perf_counter() - start
            assert response.status_code == 200
            if i >= 10:
                (cached if mode == "cached" else cold).append(elapsed)

    reset_orders()
    make_orders(user, count=200, items=3)
    list_url = f"/api/v1/orders/?include={ALL}&page_size=200"
    with count_queries() as optimised_queries:
        assert len(client.get(list_url).json()["results"]) == 200
    one_order_user = get_user_model().objects.create_user(username=f"bench-one-{time.time_ns()}")
    make_orders(one_order_user, count=1, items=3)
    single = APIClient()
    single.force_authenticate(one_order_user)
    with count_queries() as single_queries:
        assert len(single.get(list_url).json()["results"]) == 1

    def naive_list():
        return OrderSerializer(
            list(Order.objects.filter(user=user).order_by("-created_at")),
            many=True,
            context={"includes": set(INCLUDES)},
        ).data

    with count_queries() as naive_queries:
        naive_list()
    optimised_times, naive_times, dumps_times = [], [], []
    for _ in range(list_rounds):
        start = time.perf_counter()
        page = client.get(list_url)
        optimised_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        naive_list()
        naive_times.append(time.perf_counter() - start)
        data = page.json()  # the floor: only turning the same data into JSON text
        start = time.perf_counter()
        json.dumps(data)
        dumps_times.append(time.perf_counter() - start)
    reset_orders()

    hot_ms, cold_ms = p50(cached) * 1000, p50(cold) * 1000
    list_ms, naive_ms = p50(optimised_times) * 1000, p50(naive_times) * 1000
    dumps_ms = p50(dumps_times) * 1000
    return report(
        [
            Result("orders", f"order detail p50, pre-cached (n={len(cached)})", hot_ms, "ms"),
            Result("orders", f"order detail p50, cold (n={len(cold)})", cold_ms, "ms"),
            Result("orders", "order detail p50 ratio pre-cached / cold", hot_ms / cold_ms, "x", "<= 0.3"),
            Result("orders", "order list SQL queries, 200 orders with includes", len(optimised_queries), "queries"),
            Result("orders", "order list SQL queries, 1 order with includes", len(single_queries), "queries"),
            Result(
                "orders",
                "order list queries ratio 200 / 1 (constant)",
                len(optimised_queries) / len(single_queries),
                "x",
                "<= 1.0",
            ),
            Result("orders", "naive per-object list SQL queries, 200 orders", len(naive_queries), "queries"),
            Result(
                "orders",
                f"order list p50, 200 orders with all includes (API, n={list_rounds})",
                list_ms,
                "ms",
                "<= 150",
            ),
            Result("orders", "json.dumps of the same 200 orders p50 (the floor)", dumps_ms, "ms"),
            Result("orders", "order list p50 / json.dumps floor", list_ms / dumps_ms, "x"),
            Result("orders", "naive per-object serialisation p50, 200 orders", naive_ms, "ms"),
            Result("orders", "order list p50 ratio API / naive", list_ms / naive_ms, "x"),
        ]
    )
