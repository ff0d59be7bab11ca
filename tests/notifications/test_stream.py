"""The live event stream (GET /api/v1/notifications/stream): a real uvicorn process
(python -m celeste.asgi_server) on loopback, read by a real HTTP client, on the test
database and Redis."""

import json
import signal
import time
from datetime import timedelta

import httpx2
import pytest
from django.conf import settings
from django.core import signing
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from celeste.devserver import embedded
from celeste.devserver.processes import asgi_server
from notifications import services, stream
from notifications.models import StreamEvent, StreamKind
from notifications.tasks import sweep_stream_events
from orders import services as orders
from tests.conftest import wait_for
from tests.factories import UserFactory, place_order

HEARTBEAT = 0.3
# The server is another process: it sees committed rows only.
served = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        env = {"STREAM_HEARTBEAT_SECONDS": str(HEARTBEAT), "STREAM_MAX_CONNECTIONS_PER_USER": "2", "LOG_LEVEL": "INFO"}
        with asgi_server(env=env, log_dir=embedded.var_dir() / "logs") as running:
            yield running


@pytest.fixture(autouse=True)
def _fresh_redis(redis):
    return redis


class Stream:
    """An open SSE response, read line by line into events."""

    def __init__(self, server, *, token=None, ticket=None, last_event_id=None):
        headers = {}
        if token:
            headers["Authorization"] = f"Token {token}"
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        params = {"ticket": ticket} if ticket else {}
        self.client = httpx2.Client(timeout=httpx2.Timeout(10))
        self.context = self.client.stream(
            "GET", f"{server.url}/api/v1/notifications/stream", headers=headers, params=params
        )
        self.response = self.context.__enter__()
        self.lines = self.response.iter_lines() if self.response.status_code == 200 else iter(())
        self.ended = False

    def next_event(self, *, timeout: float = 10) -> dict | None:
        """The next event (heartbeats included as ``{"comment": …}``); None when the stream ended."""
        deadline = time.monotonic() + timeout
        event: dict = {}
        for line in self.lines:
            if time.monotonic() > deadline:
                raise AssertionError("no event in time")
            if line == "":
                if event:
                    return event
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                return {"comment": value}
            event[field] = json.loads(value) if field == "data" else value
        self.ended = True
        return None

    def next_field(self, *, timeout: float = 10) -> dict | None:
        """The next event or ``retry``, heartbeats skipped; None when the stream ended."""
        while True:
            event = self.next_event(timeout=timeout)
            if event is None or "comment" not in event:
                return event

    def events(self, count: int, *, timeout: float = 10) -> list[dict]:
        """The next ``count`` real events (not heartbeats or ``retry``)."""
        found, deadline = [], time.monotonic() + timeout
        while len(found) < count:
            assert time.monotonic() < deadline, f"only {found} in time"
            event = self.next_event(timeout=timeout)
            assert event is not None, f"the stream ended after {found}"
            if "event" in event:
                found.append(event)
        return found

    def quiet_for(self, seconds: float) -> list[dict]:
        """Real events that arrive within ``seconds`` (heartbeats keep the reads short)."""
        found, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            event = self.next_event(timeout=seconds + 5)
            if event is None:
                break
            if "event" in event:
                found.append(event)
        return found

    def close(self):
        self.context.__exit__(None, None, None)
        self.client.close()


@pytest.fixture
def open_stream(server):
    opened = []

    def open_(**kwargs):
        opened.append(Stream(server, **kwargs))
        return opened[-1]

    yield open_
    for s in opened:
        s.close()


def customer():
    user = UserFactory()
    return user, Token.objects.create(user=user).key


def ids(events):
    return [int(e["id"]) for e in events]


@served
def test_a_status_change_reaches_its_owner_and_no_one_else(open_stream):
    alice, alice_token = customer()
    bob, bob_token = customer()
    order = place_order(user=alice)
    alice_stream, bob_stream = open_stream(token=alice_token), open_stream(token=bob_token)
    assert alice_stream.response.headers["content-type"].startswith("text/event-stream")
    assert alice_stream.next_event() == {"retry": "3000"}
    assert bob_stream.next_event() == {"retry": "3000"}

    orders.order_mark_paid(order_id=order.id)

    (event,) = alice_stream.events(1)
    assert event["event"] == "order.status"
    assert event["data"] == {
        "order": order.id,
        "number": order.number,
        "status": "paid",
        "previous": "pending",
        "changed_at": event["data"]["changed_at"],
    }
    assert event["id"] == "2"  # placing the order was event 1
    assert bob_stream.quiet_for(1.0) == []
    # An idle stream still talks: a heartbeat comment every STREAM_HEARTBEAT_SECONDS.
    started = time.monotonic()
    assert bob_stream.next_event() == {"comment": "heartbeat"}
    assert time.monotonic() - started < HEARTBEAT * 4
    # Bob asking for a replay from before Alice's events gets none of them either.
    assert open_stream(token=bob_token, last_event_id=0).quiet_for(0.8) == []


@served
def test_an_in_app_notification_is_streamed_when_its_delivery_is_sent(open_stream):
    user, token = customer()
    order = orders.order_mark_paid(order_id=place_order(user=user).id)
    live = open_stream(token=token)
    live.next_event()

    notification = services.notification_dispatch_order_event(order_id=order.id, status="paid")

    (event,) = live.events(1)
    assert event["event"] == "notification"
    assert event["data"]["id"] == notification.id
    assert event["data"]["title"] == notification.title
    assert event["data"]["event"] == "order.paid"
    # Dispatching again (a redelivered job) notifies nothing, so streams nothing.
    services.notification_dispatch_order_event(order_id=order.id, status="paid")
    assert live.quiet_for(0.8) == []


@served
def test_a_reconnecting_client_gets_what_it_missed_once_in_order_then_live(open_stream):
    user, token = customer()
    order = place_order(user=user)  # event 1
    first = open_stream(token=token)
    orders.order_mark_paid(order_id=order.id)  # 2
    assert ids(first.events(1)) == [2]
    first.close()

    services.notification_dispatch_order_event(order_id=order.id, status="paid")  # 3
    orders.order_confirm(order_id=order.id)  # 4
    orders.order_ship(order_id=order.id)  # 5

    again = open_stream(token=token, last_event_id=2)
    missed = again.events(3)
    assert ids(missed) == [3, 4, 5]
    assert [e["event"] for e in missed] == ["notification", "order.status", "order.status"]
    orders.order_deliver(order_id=order.id)  # 6
    assert ids(again.events(1)) == [6]
    assert again.quiet_for(0.8) == []


@served
def test_an_event_whose_publication_was_lost_is_sent_before_the_next_one(open_stream):
    user, token = customer()
    order = place_order(user=user)  # 1
    live = open_stream(token=token)
    live.next_event()
    # Event 2 is committed but never published (its process died between commit and publish).
    with connection.cursor() as cursor:
        cursor.execute("UPDATE notifications_streamsequence SET last_id = 2 WHERE user_id = %s", [user.id])
    StreamEvent.objects.create(user=user, event_id=2, kind=StreamKind.ORDER_STATUS, data={"lost": True})

    orders.order_mark_paid(order_id=order.id)  # 3, published

    events = live.events(2)
    assert ids(events) == [2, 3]
    assert events[0]["data"] == {"lost": True}


@pytest.mark.django_db
def test_a_rolled_back_change_leaves_no_event_and_no_gap():
    user = UserFactory()
    with pytest.raises(RuntimeError), transaction.atomic():
        stream.stream_event_append(user_id=user.id, kind=StreamKind.ORDER_STATUS, data={})
        raise RuntimeError
    assert stream.stream_event_append(user_id=user.id, kind=StreamKind.ORDER_STATUS, data={}) == 1
    assert list(StreamEvent.objects.filter(user=user).values_list("event_id", flat=True)) == [1]


# --- tickets ---------------------------------------------------------------------


def ticket_for(user) -> str:
    client = APIClient()
    client.force_authenticate(user)
    response = client.post("/api/v1/notifications/stream-ticket")
    assert response.status_code == 200, response.content
    assert response.json()["expires_in"] == settings.STREAM_TICKET_TTL_SECONDS
    return response.json()["ticket"]


@served
def test_a_ticket_opens_the_stream_once(open_stream):
    user, _token = customer()
    ticket = ticket_for(user)
    live = open_stream(ticket=ticket)
    assert live.response.status_code == 200
    place_order(user=user)
    assert live.events(1)[0]["event"] == "order.status"

    reused = open_stream(ticket=ticket)
    assert reused.response.status_code == 401
    reused.response.read()
    assert reused.response.json() == {"detail": "The ticket was used already; ask for a new one."}


@served
def test_bad_tickets_tokens_and_input_are_refused(open_stream, server):
    user, _token = customer()

    class EarlierSigner(signing.TimestampSigner):
        def timestamp(self):
            return signing.b62_encode(int(time.time()) - settings.STREAM_TICKET_TTL_SECONDS - 5)

    expired = EarlierSigner(salt=stream.TICKET_SALT).sign_object({"u": user.id, "n": "x"})
    forged = ticket_for(user)[:-2] + "xx"
    other_salt = signing.dumps({"u": user.id, "n": "y"}, salt="notifications.unsubscribe.v2")
    for ticket, detail in [
        (expired, "The ticket has expired; ask for a new one."),
        (forged, "The ticket is not valid."),
        (other_salt, "The ticket is not valid."),
    ]:
        refused = open_stream(ticket=ticket)
        refused.response.read()
        assert (refused.response.status_code, refused.response.json()["detail"]) == (401, detail)

    url = f"{server.url}/api/v1/notifications/stream"
    none = httpx2.get(url)
    assert none.status_code == 401
    assert none.headers["WWW-Authenticate"] == "Token"
    assert httpx2.get(url, headers={"Authorization": "Token nope"}).status_code == 401
    assert httpx2.get(url, headers={"Authorization": "Bearer x"}).status_code == 401
    _bob, token = customer()
    headers = {"Authorization": f"Token {token}"}
    for bad in ("abc", "-1", "1.5", "99999999999999999999"):
        answer = httpx2.get(url, headers={**headers, "Last-Event-ID": bad})
        assert answer.status_code == 400, bad
        assert "Last-Event-ID" in answer.json()["detail"]
    assert httpx2.post(url, headers=headers).status_code == 405


@pytest.mark.django_db
def test_a_ticket_needs_a_signed_in_user():
    assert APIClient().post("/api/v1/notifications/stream-ticket").status_code == 401


@pytest.mark.django_db
def test_the_wsgi_server_does_not_serve_the_stream():
    _user, token = customer()
    answer = Client().get("/api/v1/notifications/stream", HTTP_AUTHORIZATION=f"Token {token}")
    assert answer.status_code == 421


# --- limits, outages, shutdown ---------------------------------------------------


@served
def test_a_user_has_at_most_the_configured_number_of_streams(open_stream):
    _user, token = customer()
    first, _second = open_stream(token=token), open_stream(token=token)
    third = open_stream(token=token)
    assert third.response.status_code == 429
    third.response.read()
    assert third.response.json() == {"detail": "At most 2 open streams per user; close one first."}
    first.close()
    wait_for(lambda: open_stream(token=token).response.status_code == 200, timeout=5, message="a freed slot")


@served
def test_redis_down_tells_the_stream_and_replay_fills_the_gap(open_stream, embedded_root):
    user, token = customer()
    order = place_order(user=user)  # 1
    live = open_stream(token=token, last_event_id=1)
    live.next_event()
    ticket = ticket_for(user)

    embedded.stop_redis(embedded_root)
    try:
        notice = live.next_field()
        assert notice["event"] == "unavailable"
        assert "reconnecting" in notice["data"]["detail"]
        assert live.next_field() is None  # and the stream ended
        orders.order_mark_paid(order_id=order.id)  # 2: committed; its publication fails
        # A stream opened meanwhile replays from Postgres, then says so too.
        during = open_stream(token=token, last_event_id=1)
        events = [during.next_field() for _ in range(3)]
        assert [e.get("event") for e in events[1:]] == ["order.status", "unavailable"]
        assert during.next_field() is None
        # Single use cannot be checked: a ticket is refused for now, not made reusable.
        refused = open_stream(ticket=ticket)
        assert refused.response.status_code == 503
        assert refused.response.headers["Retry-After"]
    finally:
        embedded.start_redis(embedded_root)

    again = open_stream(token=token, last_event_id=1)
    assert ids(again.events(1)) == [2]
    orders.order_confirm(order_id=order.id)  # 3: live again
    assert ids(again.events(1)) == [3]


@served
def test_a_shutdown_ends_the_streams_cleanly():
    _user, token = customer()
    with asgi_server(env={"STREAM_HEARTBEAT_SECONDS": "5"}, log_dir=embedded.var_dir() / "logs") as running:
        live = Stream(running, token=token)
        assert live.next_event() == {"retry": "3000"}
        started = time.monotonic()
        running.proc.send_signal(signal.SIGTERM)
        assert live.next_event(timeout=5) is None  # the body ended properly: no protocol error
        live.close()
        assert running.proc.wait(10) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
        assert "Finished server process" in running.log()
        assert time.monotonic() - started < 3  # not the graceful timeout


# --- retention -------------------------------------------------------------------


@served
def test_the_sweep_deletes_expired_events_and_replay_says_so(open_stream):
    user, token = customer()
    for _ in range(3):
        stream.stream_event_append(user_id=user.id, kind=StreamKind.ORDER_STATUS, data={})
    old = timezone.now() - timedelta(hours=settings.STREAM_RETENTION_HOURS, minutes=1)
    StreamEvent.objects.filter(event_id__lte=2).update(created_at=old)
    assert sweep_stream_events.apply().get() == 2
    assert sweep_stream_events.apply().get() == 0
    assert list(StreamEvent.objects.values_list("event_id", flat=True)) == [3]

    live = open_stream(token=token, last_event_id=0)
    live.next_event()
    reset, replayed = live.next_event(), live.next_event()
    assert reset["event"] == "reset"
    assert replayed["id"] == "3"
    # Ids never repeat after a sweep.
    assert stream.stream_event_append(user_id=user.id, kind=StreamKind.ORDER_STATUS, data={}) == 4
    assert ids(live.events(1)) == [4]

    # An id this stream never sent (another deployment's, a restored database): reset, then follow.
    unknown = open_stream(token=token, last_event_id=50)
    unknown.next_event()
    reset = unknown.next_event()
    assert reset["event"] == "reset" and reset["data"]["id"] == 4
    stream.stream_event_append(user_id=user.id, kind=StreamKind.ORDER_STATUS, data={})
    assert ids(unknown.events(1)) == [5]
