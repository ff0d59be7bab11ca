"""Serving the live stream: ``GET /api/v1/notifications/stream`` as Server-Sent Events,
in the ASGI process (``python -m celeste.asgi_server``). The record and the
publishing are in ``notifications/stream.py``.

A connection: authenticate (token header or single-use ticket), take one of the
user's connection slots, subscribe to the user's channel through this process's
``Hub``, replay from Postgres what came after ``Last-Event-ID``, then forward live
events in id order, with a comment line every STREAM_HEARTBEAT_SECONDS. Ids are
the user's own gapless sequence, so a live event whose id jumps ahead means a
publication went missing (or arrived out of order): the gap is read from Postgres
before the event is sent. Every event therefore reaches an open stream exactly once
and in order, and a reconnecting client gets the rest by replay.

Redis down: the stream replays what Postgres has, sends ``event: unavailable`` and
ends; the browser reconnects after ``retry:`` and replay fills the gap.
"""

import asyncio
import json
import logging
import time
import uuid

import redis
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import close_old_connections
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from celeste import asgi_server
from celeste.background.limits import ACQUIRE_SCRIPT

from .metrics import STREAM_CONNECTIONS, STREAM_ENDS
from .stream import (
    CHANNEL_PREFIX,
    InvalidTicket,
    stream_channel,
    stream_events_after,
    stream_last_id,
    stream_ticket_read,
    ticket_used_key,
)

logger = logging.getLogger(__name__)

SLOTS_PREFIX = "celeste:stream:connections:"
REPLAY_PAGE = 500
MAX_EVENT_ID = 2**63 - 1
DOWN, CLOSING = object(), object()  # what the hub puts in a stream's queue besides messages
UNAVAILABLE = {"detail": "Live updates are interrupted; reconnecting will deliver what was missed."}


class Hub:
    """This process's one Redis pub/sub connection, shared by all its streams: one
    channel per user with a stream here, subscribed while the first is open and
    left with the last. A message goes to the queue of each of that user's streams.
    When the connection fails, every stream is told (DOWN) and the hub starts
    afresh with the next stream."""

    def __init__(self):
        self.queues: dict[int, set[asyncio.Queue]] = {}
        self.confirmations: dict[str, asyncio.Future] = {}
        self.pubsub = None
        self.reader: asyncio.Task | None = None
        self.lock = asyncio.Lock()
        self.closing = False
        self.background: set[asyncio.Task] = set()

    async def join(self, user_id: int) -> asyncio.Queue:
        """A queue for a new stream of ``user_id``, once its channel is subscribed
        (confirmed by Redis, so nothing published after this returns is missed).
        Raises redis.RedisError (or TimeoutError) when Redis cannot say."""
        queue: asyncio.Queue = asyncio.Queue()
        if self.closing:
            queue.put_nowait(CLOSING)
            return queue
        async with self.lock:
            if user_id not in self.queues:
                if self.pubsub is None:
                    self.pubsub = _redis(pubsub=True).pubsub()
                channel = stream_channel(user_id)
                confirmed = self.confirmations[channel] = asyncio.get_running_loop().create_future()
                try:
                    await self.pubsub.subscribe(channel)
                    if self.reader is None or self.reader.done():
                        self.reader = asyncio.create_task(self._read(self.pubsub))
                    await asyncio.wait_for(confirmed, timeout=5)
                finally:
                    self.confirmations.pop(channel, None)
                self.queues[user_id] = set()
            self.queues[user_id].add(queue)
        return queue

    def leave(self, user_id: int, queue: asyncio.Queue) -> None:
        listeners = self.queues.get(user_id)
        if listeners is None:
            return
        listeners.discard(queue)
        if not listeners:
            self.spawn(self._unsubscribe(user_id))

    async def _unsubscribe(self, user_id: int) -> None:
        async with self.lock:
            if self.queues.get(user_id) or self.pubsub is None:
                return  # a new stream of the user came meanwhile (or the connection is gone)
            self.queues.pop(user_id, None)
            try:
                await self.pubsub.unsubscribe(stream_channel(user_id))
            except (redis.RedisError, OSError):
                pass  # the reader sees the failure and resets

    async def _read(self, pubsub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                channel = message["channel"].decode()
                if message["type"] == "subscribe":
                    future = self.confirmations.get(channel)
                    if future is not None and not future.done():
                        future.set_result(True)
                elif message["type"] == "message":
                    for queue in list(self.queues.get(int(channel.removeprefix(CHANNEL_PREFIX)), ())):
                        queue.put_nowait(message["data"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection is gone: every stream must know
            logger.warning("stream.redis_lost", extra={"error": repr(exc), "streams": self.stream_count()})
            self._reset(DOWN)
            self.spawn(pubsub.aclose())

    def _reset(self, signal) -> None:
        for listeners in self.queues.values():
            for queue in listeners:
                queue.put_nowait(signal)
        self.queues.clear()
        for future in self.confirmations.values():
            if not future.done():
                future.set_exception(redis.ConnectionError("Redis connection lost."))
        self.pubsub = None

    def close(self) -> None:
        """Shutting down (celeste.asgi_server.on_drain): end every stream now."""
        self.closing = True
        self._reset(CLOSING)
        if self.reader is not None:
            self.reader.cancel()

    def stream_count(self) -> int:
        return sum(len(listeners) for listeners in self.queues.values())

    def spawn(self, coroutine) -> asyncio.Task:
        """Run ``coroutine`` in the background, errors logged, not lost to garbage collection."""
        task = asyncio.create_task(_quietly(coroutine))
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task


async def _quietly(coroutine):
    try:
        await coroutine
    except Exception as exc:
        logger.info("stream.cleanup_failed", extra={"error": repr(exc)})


_hub: Hub | None = None
_clients: dict[bool, aioredis.Redis] = {}


def hub() -> Hub:
    global _hub
    if _hub is None:
        _hub = Hub()
        asgi_server.on_drain(_hub.close)
    return _hub


def _redis(*, pubsub: bool = False) -> aioredis.Redis:
    """Commands fail fast (1 s); the pub/sub connection blocks on reads by design."""
    if pubsub not in _clients:
        timeout = None if pubsub else 1
        _clients[pubsub] = aioredis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=1, health_check_interval=0
        )
    return _clients[pubsub]


def _db(function):
    """``function`` made awaitable, run in the event loop's shared thread pool.

    Not in the request's own thread (Django's default for sync code under ASGI): a
    stream's request lasts for hours, and a database connection opened in its
    thread would stay open as long, one per stream. The pool's few threads keep
    theirs (CONN_MAX_AGE), checked before each use as after a Postgres restart."""

    def checked(*args, **kwargs):
        close_old_connections()
        return function(*args, **kwargs)

    return sync_to_async(checked, thread_sensitive=False)


# --- connection slots per user --------------------------------------------------


def _slot_hold_seconds() -> float:
    # Refreshed every heartbeat: a process that died frees its slots within this.
    return 3 * settings.STREAM_HEARTBEAT_SECONDS + 5


async def slot_acquire(user_id: int) -> str | None:
    """A slot token if the user has fewer than STREAM_MAX_CONNECTIONS_PER_USER streams
    open (across all processes), else None. Redis cannot say: a token (the limit
    is not enforced; the stream ends soon anyway, saying Redis is down)."""
    token = uuid.uuid4().hex
    now = time.time()
    try:
        held = await _redis().eval(
            ACQUIRE_SCRIPT,
            1,
            f"{SLOTS_PREFIX}{user_id}",
            now,
            settings.STREAM_MAX_CONNECTIONS_PER_USER,
            token,
            now + _slot_hold_seconds(),
        )
    except (redis.RedisError, OSError) as exc:
        logger.warning("stream.slot_unchecked", extra={"user_id": user_id, "error": repr(exc)})
        return token
    return token if held else None


async def _slot_refresh(user_id: int, token: str) -> None:
    await _redis().zadd(f"{SLOTS_PREFIX}{user_id}", {token: time.time() + _slot_hold_seconds()}, xx=True)


async def _slot_release(user_id: int, token: str) -> None:
    await _redis().zrem(f"{SLOTS_PREFIX}{user_id}", token)


# --- authentication -------------------------------------------------------------


class Refused(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _token_user(key: str):
    try:
        user, _token = TokenAuthentication().authenticate_credentials(key)
    except AuthenticationFailed as exc:
        raise Refused(401, str(exc.detail)) from None
    return user


def _ticket_user(user_id: int):
    user = get_user_model().objects.filter(id=user_id, is_active=True).first()
    if user is None:
        raise Refused(401, "The ticket is not valid.")
    return user


async def authenticate(request):
    """The user of the ``Authorization: Token …`` header, or of a ``ticket`` in the
    query string (used up here). Raises Refused."""
    header = request.headers.get("Authorization", "")
    if header:
        keyword, _, key = header.partition(" ")
        if keyword != "Token" or not key.strip() or " " in key.strip():
            raise Refused(401, "Invalid token header: use 'Authorization: Token <key>'.")
        return await _db(_token_user)(key.strip())
    ticket = request.GET.get("ticket")
    if not ticket:
        raise Refused(401, "Authentication credentials were not provided: a token header or a ticket.")
    try:
        user_id, nonce = stream_ticket_read(ticket)
    except InvalidTicket as exc:
        raise Refused(401, str(exc)) from None
    try:
        fresh = await _redis().set(ticket_used_key(nonce), 1, nx=True, ex=settings.STREAM_TICKET_TTL_SECONDS + 5)
    except (redis.RedisError, OSError):
        # Single use cannot be checked: refuse rather than let a ticket be replayed.
        raise Refused(503, "Tickets cannot be checked right now; retry shortly.") from None
    if not fresh:
        raise Refused(401, "The ticket was used already; ask for a new one.")
    return await _db(_ticket_user)(user_id)


def _last_event_id(request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_EVENT_ID:
        raise Refused(400, "Last-Event-ID must be an event id this stream sent (a whole number).")
    return int(raw)


# --- the view -------------------------------------------------------------------


def _error(status: int, detail: str, request) -> JsonResponse:
    response = JsonResponse({"detail": detail}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = "Token"
    elif status == 503:
        response["Retry-After"] = str(settings.SERVICE_UNAVAILABLE_RETRY_AFTER_SECONDS)
    _allow_origin(request, response)
    return response


def _allow_origin(request, response) -> None:
    origin = request.headers.get("Origin")
    allowed = settings.STREAM_ALLOWED_ORIGINS
    if origin and ("*" in allowed or origin in allowed):
        response["Access-Control-Allow-Origin"] = origin
        response["Vary"] = "Origin"


@csrf_exempt  # no cookie is read: a POST gets the 405 below, not the CSRF page
async def notification_stream(request):
    """GET /api/v1/notifications/stream (text/event-stream); see docs/api.md."""
    if request.method != "GET":
        response = _error(405, f'Method "{request.method}" not allowed.', request)
        response["Allow"] = "GET"
        return response
    if "wsgi.input" in request.META:
        # Under WSGI the stream would hold a thread for as long as it is open.
        return _error(421, "The event stream is served by the ASGI server (python -m celeste.asgi_server).", request)
    try:
        after = _last_event_id(request)
        user = await authenticate(request)
    except Refused as exc:
        return _error(exc.status, exc.detail, request)
    slot = await slot_acquire(user.id)
    if slot is None:
        limit = settings.STREAM_MAX_CONNECTIONS_PER_USER
        return _error(429, f"At most {limit} open streams per user; close one first.", request)
    try:
        last = await _db(stream_last_id)(user.id)
    except Exception:
        _release_later(user.id, slot)
        raise
    try:
        queue = await hub().join(user.id)
    except (redis.RedisError, OSError, TimeoutError) as exc:
        logger.warning("stream.redis_unavailable", extra={"user_id": user.id, "error": repr(exc)})
        queue = None
    response = StreamingHttpResponse(
        _events(user_id=user.id, after=after, last=last, queue=queue, slot=slot), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache, no-store"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    _allow_origin(request, response)
    return response


def _sse(message: str | bytes) -> str:
    """The SSE lines of a published message (stream.stream_message JSON)."""
    parsed = json.loads(message)
    data = json.dumps(parsed["data"], separators=(",", ":"))
    return f"id: {parsed['id']}\nevent: {parsed['event']}\ndata: {data}\n\n"


def _notice(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def _events(*, user_id: int, after: int | None, last: int, queue: asyncio.Queue | None, slot: str):
    """The stream's body. ``after``: the client's Last-Event-ID (None: live only);
    ``last``: the user's latest event id when the stream began."""
    STREAM_CONNECTIONS.inc()
    ended = "client"
    try:
        yield f"retry: {settings.STREAM_RETRY_MILLISECONDS}\n\n"
        sent = last if after is None else after
        if after is not None and after > last:
            # Not an id of ours (another deployment's, a restored database): start afresh.
            yield _notice("reset", {"detail": "Unknown Last-Event-ID; reload, then follow from here.", "id": last})
            sent = last
        while sent < last:  # replay, a page at a time
            messages = await _db(stream_events_after)(user_id, sent, upto=last, limit=REPLAY_PAGE)
            if not messages:  # all of them expired
                yield _notice("reset", {"detail": "Some events are older than the replay window; reload."})
                break
            first = json.loads(messages[0])["id"]
            if first != sent + 1:
                yield _notice("reset", {"detail": "Some events are older than the replay window; reload."})
            for message in messages:
                yield _sse(message)
            sent = json.loads(messages[-1])["id"]
        sent = max(sent, last)
        if queue is None:
            ended = "redis_down"
            yield _notice("unavailable", UNAVAILABLE)
            return
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), settings.STREAM_HEARTBEAT_SECONDS)
            except TimeoutError:
                yield ": heartbeat\n\n"
                hub().spawn(_slot_refresh(user_id, slot))
                continue
            if item is DOWN:
                ended = "redis_down"
                yield _notice("unavailable", UNAVAILABLE)
                return
            if item is CLOSING:
                ended = "shutdown"
                return
            event_id = json.loads(item)["id"]
            if event_id <= sent:
                continue  # replayed already (or a duplicate)
            if event_id > sent + 1:  # earlier ones are committed but their publication is late or lost
                for message in await _db(stream_events_after)(user_id, sent, upto=event_id - 1, limit=event_id - sent):
                    yield _sse(message)
            yield _sse(item)
            sent = event_id
    finally:
        STREAM_CONNECTIONS.dec()
        STREAM_ENDS.labels(reason=ended).inc()
        if queue is not None:
            hub().leave(user_id, queue)
        _release_later(user_id, slot)


def _release_later(user_id: int, slot: str) -> None:
    # Runs after a cancelled response too (client gone): nothing here may await.
    hub().spawn(_slot_release(user_id, slot))
