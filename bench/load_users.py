"""The Locust users of the load bench: a locustfile, run by ``bench/load.py`` in a Locust subprocess.

It imports neither Django nor the project (Locust patches the process with gevent): everything
it needs is in the plan, a JSON file named by ``CELESTE_LOAD_PLAN`` that the bench writes before
each step: the request mix (weights), the rate of one user, the tokens, the ids to read and, for
writes that can happen once (a product's SKU, a payment event, an order's transition), one item
per request, with webhook bodies already signed by the bench.
"""

import itertools
import json
import os
import random
import time
from pathlib import Path

import gevent
from locust import FastHttpUser

PLAN = json.loads(Path(os.environ["CELESTE_LOAD_PLAN"]).read_text())
INCLUDE_ALL = "include=products,stores,addresses"


class Items:
    """Round robin over a list (reads), or each item once (one-time writes)."""

    def __init__(self, items: list, *, once: bool = False):
        self.items, self.once, self.next = items, once, 0

    def take(self):
        if self.once and self.next >= len(self.items):
            raise RuntimeError("the plan ran out of one-time items: the bench sized it too small")
        item = self.items[self.next % len(self.items)]
        self.next += 1
        return item


READ = {name: Items(PLAN["reads"][name]) for name in ("products", "stores", "categories", "queries", "customers")}
ONCE = {name: Items(items, once=True) for name, items in PLAN["once"].items()}
STAFF = {"Authorization": f"Token {PLAN['staff_token']}"}


def customer_headers(customer: dict) -> dict:
    return {"Authorization": f"Token {customer['token']}"}


def browse(user):
    store, category = READ["stores"].take(), READ["categories"].take()
    user.client.get(
        f"/api/v1/products/?store={store}&category={category}&in_stock=true&ordering=price",
        name="GET /products/?store&category&in_stock",
    )


def search(user):
    user.client.get(f"/api/v1/products/search?q={READ['queries'].take()}", name="GET /products/search?q")


def view(user):
    user.client.post(
        f"/api/v1/products/{READ['products'].take()}/view",
        json={"store": READ["stores"].take()},
        name="POST /products/{id}/view",
    )


def order_detail(user):
    customer = READ["customers"].take()
    user.client.get(
        f"/api/v1/orders/{customer['order']}/?{INCLUDE_ALL}",
        headers=customer_headers(customer),
        name="GET /orders/{id}/?include=all",
    )


def notifications(user):
    customer = READ["customers"].take()
    user.client.get("/api/v1/notifications/", headers=customer_headers(customer), name="GET /notifications/")


def product_create(user):
    user.client.post("/api/v1/products/", json=ONCE["product_create"].take(), headers=STAFF, name="POST /products/")


def product_update(user):
    product_id, description = ONCE["product_update"].take()
    user.client.patch(
        f"/api/v1/products/{product_id}/",
        json={"description": description},
        headers=STAFF,
        name="PATCH /products/{id}/",
    )


def place_order(user):
    customer = READ["customers"].take()
    body = {"store": customer["store"], "address": customer["address"], "items": ONCE["order_items"].take()}
    user.client.post("/api/v1/orders/", json=body, headers=customer_headers(customer), name="POST /orders/")


def pay(user):
    body, signature = ONCE["payment"].take()
    user.client.post(
        "/api/v1/payments/webhook",
        data=body,
        headers={"Content-Type": "application/json", PLAN["signature_header"]: signature},
        name="POST /payments/webhook",
    )


def confirm(user):
    user.client.post(
        f"/api/v1/orders/{ONCE['confirm'].take()}/confirm", headers=STAFF, name="POST /orders/{id}/confirm"
    )


TASKS = {
    "browse": browse,
    "search": search,
    "view": view,
    "order_detail": order_detail,
    "notifications": notifications,
    "product_create": product_create,
    "product_update": product_update,
    "place_order": place_order,
    "pay": pay,
    "confirm": confirm,
}


MIX = [TASKS[name] for name, weight in PLAN["weights"].items() if weight]
TURN = itertools.count()


def in_turn(user):
    """The mix's requests one after the other across all users, not drawn by weight: a short run
    (the plumbing test) makes each of them."""
    MIX[next(TURN) % len(MIX)](user)


class Client(FastHttpUser):
    """One client of the mix, at a constant rate: the step's rate is users × this rate.

    Not Locust's ``constant_throughput``: Locust starts all of a step's users at once (spawn
    rate = users) and that pacing keeps each on the phase it was created at, so every user
    fired at the same instant. The step was then bursts of ``users`` simultaneous requests,
    and its p95 measured how long a burst took, not how the server queues independent
    clients. Each user here keeps the same pace from a random phase of its own."""

    period = 1 / PLAN["user_rate"]

    def on_start(self):
        gevent.sleep(random.uniform(0, self.period))
        self.due = time.perf_counter()

    def wait_time(self):
        # As constant pacing does: a request that overran its slot starts the next at once.
        self.due = max(self.due + self.period, time.perf_counter())
        return self.due - time.perf_counter()

    tasks = (
        [in_turn]
        if PLAN.get("in_turn")
        else {TASKS[name]: weight for name, weight in PLAN["weights"].items() if weight}
    )
