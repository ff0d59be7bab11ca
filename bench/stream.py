"""The live event stream (issue 18), against one real stream process
(``python -m celeste.asgi_server``) on loopback, read over raw HTTP/1.1 sockets by
an asyncio client in a thread of this process:

- memory per idle stream: the server's RSS growth from a warmed-up baseline to
  1,000 open streams (200 with --quick), divided by the streams; target <= 50 KB;
- order status change -> event on its user's stream, p95, while all the others
  idle: the clock starts before the service call (its transaction included) and
  stops when the client has read the event; target <= 200 ms;
- replay: one user's stream disconnected for 60 s (5 s with --quick) while their
  orders are placed, paid and notified; on reconnect with Last-Event-ID every
  missed event must arrive exactly once and in order, then the next live one.
"""

import asyncio
import statistics
import threading
import time
from decimal import Decimal

import psutil
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from bench import BASE_DIR, Result, p50, report
from celeste.asgi_server import raise_open_files_limit
from celeste.devserver.processes import asgi_server
from notifications import services as notifications
from notifications.stream import stream_last_id
from orders import services as orders

NAME = "stream"
LOG_DIR = BASE_DIR / "var" / "bench" / "logs"
PATH = "/api/v1/notifications/stream"


class Client:
    """Streams read on an asyncio loop in a thread; every event's arrival time recorded."""

    def __init__(self, port: int):
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.arrivals: dict[int, list[tuple[int, str, float]]] = {}  # user id -> (event id, event, time)
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.opened = 0

    def call(self, coroutine, timeout: float = 300):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def open(self, user_id: int, token: str, *, last_event_id: int | None = None) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        headers = f"Authorization: Token {token}\r\n"
        if last_event_id is not None:
            headers += f"Last-Event-ID: {last_event_id}\r\n"
        writer.write(f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"stream refused: {status!r} {await reader.read(500)!r}")
        while (await reader.readline()) != b"\r\n":
            pass
        self.writers[user_id] = writer
        self.arrivals.setdefault(user_id, [])
        first = asyncio.get_running_loop().create_future()
        asyncio.ensure_future(self._follow(user_id, reader, first))
        await first  # the stream's first bytes (retry:) came
        self.opened += 1

    async def _follow(self, user_id: int, reader: asyncio.StreamReader, first: asyncio.Future) -> None:
        buffer = ""
        try:
            while True:
                size = int((await reader.readline()).strip() or b"0", 16)  # chunked transfer coding
                if size == 0:
                    return
                buffer += (await reader.readexactly(size + 2))[:-2].decode()
                if not first.done():
                    first.set_result(True)
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
                    if "id" in fields:
                        self.arrivals[user_id].append((int(fields["id"]), fields.get("event", ""), time.perf_counter()))
        except (ConnectionError, asyncio.IncompleteReadError):
            return

    async def open_many(self, users: list[tuple[int, str]], *, at_once: int = 50) -> None:
        gate = asyncio.Semaphore(at_once)

        async def one(user_id, token):
            async with gate:
                await self.open(user_id, token)

        await asyncio.gather(*(one(user_id, token) for user_id, token in users))

    async def close(self, user_id: int) -> None:
        writer = self.writers.pop(user_id)
        writer.close()
        await writer.wait_closed()

    async def close_all(self) -> None:
        for user_id in list(self.writers):
            await self.close(user_id)

    def wait_for(self, user_id: int, event_id: int, timeout: float = 10) -> float:
        """The arrival time of the user's event ``event_id``."""
        deadline = time.monotonic() + timeout
        while True:
            for got, _event, at in reversed(self.arrivals[user_id]):
                if got == event_id:
                    return at
            if time.monotonic() > deadline:
                raise RuntimeError(f"event {event_id} of user {user_id} did not arrive: {self.arrivals[user_id][-5:]}")
            time.sleep(0.0005)

    def stop(self):
        self.call(self.close_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _customers(count: int) -> list[tuple[object, str]]:
    User = get_user_model()
    stamp = time.time_ns()
    User.objects.bulk_create([User(username=f"live-{stamp}-{i}") for i in range(count)], batch_size=2000)
    users = list(User.objects.filter(username__startswith=f"live-{stamp}-").order_by("id"))
    tokens = Token.objects.bulk_create([Token(user=user, key=Token.generate_key()) for user in users])
    return [(user, token.key) for user, token in zip(users, tokens, strict=True)]


class Shop:
    def __init__(self):
        from catalog import services as catalog

        self.store = catalog.store_create(code=f"live-{time.time_ns()}", name="Live Store")
        self.product = catalog.product_create(sku=f"LIVE-{time.time_ns()}", name="Oat Milk", price=Decimal("1.99"))
        catalog.stock_level_set(product=self.product, store=self.store, quantity=10_000_000)

    def place(self, user):
        address = orders.address_create(user=user, recipient="L", line1="R 1", city="B", postal_code="1", country="DE")
        return orders.order_place(user=user, store=self.store, address=address, items=[(self.product, 1)])


NEXT = [orders.order_mark_paid, orders.order_confirm, orders.order_ship, orders.order_deliver]


def run(quick: bool) -> list[Result]:
    streams = 200 if quick else 1000
    changes = 60 if quick else 200
    away = 5 if quick else 60
    raise_open_files_limit()
    print(f"\n[{NAME}] {streams} idle streams, {changes} status changes, replay after {away} s away", flush=True)
    shop = Shop()
    customers = _customers(streams + 20)
    warmup, customers = customers[:20], customers[20:]
    movers = customers[: changes // len(NEXT) + 1]
    mover_orders = [shop.place(user) for user, _token in movers]  # placed before the streams open
    results = []
    with asgi_server(env={"LOG_LEVEL": "WARNING"}, log_dir=LOG_DIR) as server:
        client = Client(server.port)
        process = psutil.Process(server.proc.pid)
        try:
            # Warm-up: the URLconf, the hub and the pub/sub connection exist before the baseline.
            client.call(client.open_many([(user.id, token) for user, token in warmup]))
            for user, _token in warmup:
                client.call(client.close(user.id))
            time.sleep(1)
            baseline = process.memory_info().rss
            started = time.monotonic()
            client.call(client.open_many([(user.id, token) for user, token in customers]))
            opened_in = time.monotonic() - started
            time.sleep(2)
            per_stream_kb = (process.memory_info().rss - baseline) / len(customers) / 1024
            print(f"  {len(customers)} streams open in {opened_in:.1f} s", flush=True)

            latencies, calls = [], []
            for i in range(changes):
                order = mover_orders[i % len(mover_orders)]
                step = NEXT[i // len(mover_orders)]
                expected = stream_last_id(order.user_id) + 1
                start = time.perf_counter()
                step(order_id=order.id)
                calls.append(time.perf_counter() - start)
                latencies.append(client.wait_for(order.user_id, expected) - start)
                time.sleep(0.01)
            p95 = statistics.quantiles(latencies, n=20)[-1]

            exact, missed = _replay(client, shop, customers[-1], away=away)
        finally:
            client.stop()
    results += [
        Result(NAME, f"memory per idle stream, RSS growth / {len(customers)} streams", per_stream_kb, "KB", "<= 50"),
        Result(NAME, f"status change -> its stream, p50 ({len(customers)} streams open)", p50(latencies) * 1000, "ms"),
        Result(NAME, f"status change -> its stream, p95 ({len(customers)} streams open)", p95 * 1000, "ms", "<= 200"),
        # Where the time goes: the status change's own transaction (lock, save, receivers, commit, publish).
        Result(NAME, "  of which the service call itself (the write), p50", p50(calls) * 1000, "ms"),
        Result(NAME, f"replay after {away} s away: {missed} missed events, exactly once in order", exact, "", ">= 1"),
    ]
    return report(results)


def _replay(client: Client, shop: Shop, customer, *, away: float) -> tuple[float, int]:
    """1.0 if every event missed while away arrives once, in order, then the next live one."""
    user, token = customer
    before = stream_last_id(user.id)
    seen = [event_id for event_id, _event, _at in client.arrivals[user.id]]
    assert seen == list(range(before + 1, before + 1 + len(seen))), seen
    client.call(client.close(user.id))
    deadline = time.monotonic() + away
    while time.monotonic() < deadline:  # about 3 events per second, spread over the whole time away
        order = shop.place(user)
        orders.order_mark_paid(order_id=order.id)
        notifications.notification_dispatch_order_event(order_id=order.id, status="paid")
        time.sleep(1)
    last_seen = before
    final = stream_last_id(user.id)
    client.arrivals[user.id] = []
    client.call(client.open(user.id, token, last_event_id=last_seen))
    client.wait_for(user.id, final, timeout=30)
    order = shop.place(user)  # and live again
    client.wait_for(user.id, final + 1)
    time.sleep(0.5)  # anything sent twice would be here by now
    got = [event_id for event_id, _event, _at in client.arrivals[user.id]]
    exact = got == list(range(last_seen + 1, final + 2))
    if not exact:
        print(f"  replay mismatch: expected {last_seen + 1}..{final + 1}, got {got}", flush=True)
    return (1.0 if exact else 0.0), final - last_seen
