from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from celeste.background.models import FailedTask, FailedTaskStatus, OutboxMessage
from celeste.devserver import embedded

from ..conftest import pending_jobs, published, queued_messages
from ..factories import ProductFactory

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_relay_outbox_drains_what_waited_for_the_broker(redis, embedded_root):
    embedded.stop_redis(embedded_root)
    ProductFactory()
    ProductFactory()
    published()
    embedded.start_redis(embedded_root)

    assert "Published 2 message(s)" in run("relay_outbox")
    assert pending_jobs() == 0
    assert queued_messages(redis) == 1  # the two embed jobs coalesce into one message


def test_relay_outbox_fails_loudly_while_the_broker_is_down(redis, embedded_root):
    embedded.stop_redis(embedded_root)
    ProductFactory()
    published()

    with pytest.raises(CommandError, match="1 still waiting"):
        run("relay_outbox")
    assert OutboxMessage.objects.count() == 1


def test_retry_failed_tasks_replays_open_jobs_of_one_task(redis):
    embed = FailedTask.objects.create(task_name="catalog.embed_products", error="boom")
    other = FailedTask.objects.create(task_name="catalog.sweep_stale_embeddings", error="boom")

    assert "Would retry 1 job(s)" in run("retry_failed_tasks", "--task", "catalog.embed_products", "--dry-run")
    assert queued_messages(redis) == 0

    assert "Re-enqueued 1 job(s)" in run("retry_failed_tasks", "--task", "catalog.embed_products")
    embed.refresh_from_db()
    other.refresh_from_db()
    assert (embed.status, other.status) == (FailedTaskStatus.RETRIED, FailedTaskStatus.OPEN)
    assert queued_messages(redis, "slow") == 1


def test_bootstrap_prints_the_generated_admin_password_once(settings, tmp_path, monkeypatch):
    from django.contrib.auth import get_user_model

    monkeypatch.delenv("CELESTE_ADMIN_PASSWORD", raising=False)
    settings.STATIC_ROOT = tmp_path / "static"
    settings.ADMIN_CREDENTIALS_FILE = tmp_path / "admin.txt"
    get_user_model().objects.filter(is_superuser=True).delete()
    first, second = StringIO(), StringIO()

    call_command("bootstrap", stdout=first)
    call_command("bootstrap", stdout=second)

    password = settings.ADMIN_CREDENTIALS_FILE.read_text().split(" / ")[1].strip()
    assert password in first.getvalue()
    assert password not in second.getvalue()
    assert str(settings.ADMIN_CREDENTIALS_FILE) in second.getvalue()
