"""Test fixtures. The suite runs on its own embedded Postgres+pgvector and Redis
under var/test (started by settings on first use, see celeste/devserver/embedded.py)."""

import time
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
import redis as redis_lib
import requests
from django.conf import settings
from django.db import connections
from moto.server import ThreadedMotoServer
from rest_framework.test import APIClient

from celeste.background import switches
from celeste.background.models import OutboxMessage, TaskSwitch
from celeste.background.publisher import publisher
from celeste.devserver import embedded
from celeste.devserver.loopback import PushReceiver, SentryReceiver, SMTPServer, free_port
from celeste.devserver.processes import celery_beat, celery_worker
from celeste.settings.base import storage_settings
from integrations.odoo.testing.server import FakeOdooServer
from notifications.channels import vapid_key_pair

from .factories import UserFactory

LOG_DIR = embedded.var_dir() / "logs"
# Knobs for worker subprocesses (on top of celeste/settings/test.py, which they
# inherit): fast retries, no warm-up.
WORKER_ENV = {
    "TASK_MAX_RETRIES": "1",
    "TASK_RETRY_BACKOFF_SECONDS": "1",
    "OUTBOX_RELAY_INTERVAL_SECONDS": "1",
    "EMBEDDING_WARM_ON_START": "0",
    # Order events send email; tests that check email point this at their loopback SMTP server.
    "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
}


@pytest.fixture(autouse=True)
def _fresh_switches():
    switches.forget_cached_switches()


@pytest.fixture(scope="session", autouse=True)
def _publisher_releases_the_test_database():
    yield
    publisher.close_connections()  # or the test database cannot be dropped at the end


@pytest.fixture(scope="session")
def embedded_root() -> Path:
    return embedded.var_dir()


@pytest.fixture
def redis(embedded_root):
    """The test Redis, emptied before each test so queues and counters start at zero."""
    if not embedded.redis_ping(embedded_root):
        embedded.start_redis(embedded_root)
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    client.flushall()
    yield client
    if not embedded.redis_ping(embedded_root):  # a test stopped it: bring it back for the next
        embedded.start_redis(embedded_root)


def published():
    """Wait for this process's outbox publisher to attempt everything committed so far."""
    assert publisher.flush(timeout=10)


def pending_jobs() -> int:
    """Ledger rows not handed to the broker yet."""
    return OutboxMessage.objects.filter(published_at__isnull=True).count()


def queued_messages(redis, queue: str = "slow") -> int:
    published()
    return redis.llen(queue)


@pytest.fixture
def worker(transactional_db, redis):
    """A real Celery worker (every queue, one process) on the test database."""
    with celery_worker(env=WORKER_ENV, log_dir=LOG_DIR) as running:
        yield running


@pytest.fixture
def start_worker(transactional_db, redis):
    """Start workers on demand (for tests that kill or restart them)."""
    started = []

    def start(*, lean: bool = True, concurrency: int = 1, nice: int = 0, **env):
        context = celery_worker(
            env={**WORKER_ENV, **env}, log_dir=LOG_DIR, lean=lean, concurrency=concurrency, nice=nice
        )
        running = context.__enter__()
        started.append(context)
        return running

    yield start
    for context in reversed(started):
        context.__exit__(None, None, None)


@pytest.fixture
def beat(transactional_db, redis):
    with celery_beat(env=WORKER_ENV, log_dir=LOG_DIR) as running:
        yield running


@pytest.fixture
def set_switch():
    def set_mode(task_name: str, mode: str):
        TaskSwitch.objects.update_or_create(task_name=task_name, defaults={"mode": mode})
        switches.forget_cached_switches()

    return set_mode


@contextmanager
def postgres_down(root: Path, *, keep_connections: bool = False):
    """Stop the test Postgres for the block; it is back (same data, same socket) afterwards,
    even if the block fails. This process's dead connections are dropped, unless
    ``keep_connections`` (to see what code does with a stale connection)."""
    embedded.stop_postgres(root)
    try:
        yield
    finally:
        embedded.start_postgres(root)
        if not keep_connections:
            connections.close_all()


def wait_for(predicate, *, timeout: float = 60, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def staff_user(db):
    return UserFactory(is_staff=True)


@pytest.fixture
def staff_client(staff_user):
    client = APIClient()
    client.force_authenticate(staff_user)
    return client


@pytest.fixture
def customer_client(db):
    client = APIClient()
    client.force_authenticate(UserFactory())
    return client


# --- outside services on loopback: SMTP, Web Push, Sentry ------------------------


@pytest.fixture
def smtp_server():
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def vapid_keys():
    return vapid_key_pair()


@pytest.fixture
def push_receiver(settings, vapid_keys):
    """A push service on loopback. Loopback is no public address, so this process may
    send to it only with PUSH_ALLOW_PRIVATE_HOSTS (workers: channels_env)."""
    settings.PUSH_ALLOW_PRIVATE_HOSTS = True
    receiver = PushReceiver(vapid_public_key=vapid_keys[1]).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def sentry_receiver():
    """Sentry's envelope endpoint on loopback: point a process at it with SENTRY_DSN=receiver.dsn()."""
    receiver = SentryReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def channels_env(settings, smtp_server, vapid_keys):
    """Point this process and worker subprocesses at the loopback SMTP server and VAPID keys."""
    env = {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_server.port),
        "VAPID_PRIVATE_KEY": vapid_keys[0],
        "VAPID_PUBLIC_KEY": vapid_keys[1],
        "PUSH_TIMEOUT_SECONDS": "5",
        # The loopback push receiver is on 127.0.0.1 over http: development and tests only.
        "PUSH_ALLOW_PRIVATE_HOSTS": "1",
    }
    settings.EMAIL_BACKEND = env["EMAIL_BACKEND"]
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = smtp_server.port
    settings.VAPID_PRIVATE_KEY, settings.VAPID_PUBLIC_KEY = vapid_keys
    return {**WORKER_ENV, **env}


@pytest.fixture
def odoo():
    """A fake Odoo speaking XML-RPC on loopback (integrations/odoo/testing/server.py)."""
    server = FakeOdooServer().start()
    yield server
    server.stop()


@pytest.fixture
def odoo_configured(settings, odoo):
    """This process configured for the fake Odoo, as web and worker are alike in a
    deployment (a payment queues the Odoo sync only with the integration on)."""
    for name, value in odoo.env().items():
        setattr(settings, name, value)
    return settings


# --- S3: a real S3-protocol server (moto's server mode, a thread serving HTTP on loopback) ---

BUCKET = "celeste-media"
CDN = "cdn.celeste.test"


@pytest.fixture
def s3(settings, tmp_path):
    """The default storage is django-storages' S3 storage on a fresh moto server, CDN domain CDN;
    yields a boto3 client of that server."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
    client = boto3.client("s3", endpoint_url=endpoint, **credentials)
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = storage_settings(
        media_root=str(tmp_path),
        bucket=BUCKET,
        endpoint_url=endpoint,
        region_name="us-east-1",
        access_key="testing",
        secret_key="testing",
        custom_domain=CDN,
    )["STORAGES"]
    yield client
    requests.post(f"{endpoint}/moto-api/reset", timeout=5)  # moto keeps its buckets per process, not per server
    server.stop()
