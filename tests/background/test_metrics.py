"""Prometheus metrics: /metrics is protected, task counters come from real
workers (summed over their pool children), the queue length from Redis, the
control plane's gauges from Postgres; gunicorn's workers each count."""

import os
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from catalog.tasks import embed_products
from celeste.background.models import FailedTask
from celeste.background.queue import enqueue
from celeste.background.tasks import ping
from celeste.celery import app
from celeste.devserver.loopback import free_port
from celeste.devserver.processes import BASE_DIR, database_url_for_current_connection
from notifications import services
from notifications.tasks import send_email

from ..conftest import published, wait_for
from ..factories import UserFactory, place_order, reach


def parse(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of a scrape."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def parse_file(path) -> dict[tuple, float]:
    """One process's metrics file."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in MultiProcessCollector.merge([str(path)])
        for sample in family.samples
    }


def scrape(client, **headers) -> dict[tuple, float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


def total(samples: dict, metric: str, /, **labels) -> float:
    """The sum of ``metric`` over every sample whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == metric and wanted <= set(have))


def done(client, before: dict, task_name: str, outcome: str, count: int) -> dict | None:
    """A scrape once ``count`` more runs of the task ended in ``outcome``, else None."""
    metric = f"celery_task_{outcome}_total"
    samples = scrape(client)
    grown = total(samples, metric, name=task_name) - total(before, metric, name=task_name)
    return samples if grown >= count else None


# --- who may scrape ------------------------------------------------------------------


@pytest.mark.django_db
def test_without_a_token_only_loopback_callers_may_scrape(client, redis, monkeypatch):
    monkeypatch.delenv("METRICS_TOKEN", raising=False)

    assert client.get("/metrics").status_code == 200  # the test client calls from 127.0.0.1
    refused = client.get("/metrics", REMOTE_ADDR="203.0.113.7")

    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_with_a_token_every_caller_needs_it(client, redis, monkeypatch):
    monkeypatch.setenv("METRICS_TOKEN", "s3cret-metrics-token")

    assert client.get("/metrics").status_code == 401  # loopback is no longer enough
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="s3cret-metrics-token").status_code == 401
    answer = client.get("/metrics", REMOTE_ADDR="203.0.113.7", HTTP_AUTHORIZATION="Bearer s3cret-metrics-token")
    assert answer.status_code == 200


# --- what a scrape shows -------------------------------------------------------------


@pytest.mark.django_db
def test_the_control_plane_gauges_come_from_postgres(client, redis, set_switch):
    set_switch(embed_products.name, "sync")
    FailedTask.objects.create(task_name="notifications.send_email", error="boom")
    enqueue(ping)
    enqueue(ping)

    samples = scrape(client)

    assert total(samples, "celeste_outbox_backlog") == 2
    assert total(samples, "celeste_outbox_oldest_age_seconds") >= 0
    assert total(samples, "celeste_failed_tasks_open", task="notifications.send_email") == 1
    assert total(samples, "celeste_task_switch_mode", task=embed_products.name, mode="sync") == 1
    for name in ("celeste_embeddings_pending", "celeste_embedding_lag_seconds", "celeste_odoo_sync_pending"):
        assert any(sample == name for sample, _ in samples), name
    # django-prometheus counts the requests themselves
    assert any(sample.startswith("django_http_requests_total") for sample, _ in samples)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_paused_worker_lets_the_queue_grow_and_its_counters_sum_over_its_children(client, start_worker):
    worker = start_worker(lean=False, concurrency=2)
    replies = wait_for(lambda: app.control.ping(timeout=1), message="the worker answering remote control")
    nodename = next(iter(replies[0]))
    before = scrape(client)

    app.control.cancel_consumer("fast", destination=[nodename], reply=True)  # paused
    for _ in range(20):
        enqueue(ping)
    published()
    grown = scrape(client)
    assert total(grown, "celery_queue_length", queue_name="fast") == 20

    app.control.add_consumer("fast", destination=[nodename], reply=True)  # resumed
    after = wait_for(lambda: done(client, before, ping.name, "succeeded", 20), message="20 pings done")

    def delta(metric, /, **labels):
        return total(after, metric, **labels) - total(before, metric, **labels)

    assert delta("celery_task_sent_total", name=ping.name, queue_name="fast") == 20
    assert delta("celery_task_received_total", name=ping.name, queue_name="fast") == 20
    assert delta("celery_task_started_total", name=ping.name, hostname=nodename) == 20
    assert delta("celery_task_runtime_seconds_count", name=ping.name) == 20
    assert total(after, "celery_queue_length", queue_name="fast") == 0
    assert total(after, "celery_worker_up", hostname=nodename) == 1
    assert worker.proc.poll() is None


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_retries_failures_and_deliveries_are_counted(client, start_worker, channels_env, smtp_server, set_switch):
    set_switch(embed_products.name, "off")
    smtp_server.fail_with = "451 4.3.0 Try again later"  # refused until the retry (TASK_MAX_RETRIES=1) runs out
    before = scrape(client)
    services.notification_dispatch_order_event(
        order_id=reach(place_order(user=UserFactory(email="a@example.com")), "paid").id, status="paid"
    )
    start_worker(**channels_env)

    wait_for(lambda: FailedTask.objects.filter(task_name=send_email.name).exists(), message="the inbox row")
    after = wait_for(lambda: done(client, before, send_email.name, "failed", 1), message="the failure counted")

    def delta(metric, /, **labels):
        return total(after, metric, **labels) - total(before, metric, **labels)

    assert delta("celery_task_retried_total", name=send_email.name) == 1
    assert delta("celery_task_failed_total", name=send_email.name) == 1
    assert delta("celery_task_succeeded_total", name=send_email.name) == 0
    assert total(after, "celeste_failed_tasks_open", task=send_email.name) == 1
    assert delta("celeste_notification_deliveries_total", channel="email", outcome="failed") == 1
    assert delta("celeste_notification_deliveries_total", channel="in_app", outcome="sent") == 1


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_on_its_own_host_serves_its_own_counters_behind_the_token(start_worker):
    port = free_port()
    start_worker(WORKER_METRICS_PORT=str(port), METRICS_TOKEN="worker-token")
    for _ in range(3):
        enqueue(ping)
    published()
    url = f"http://127.0.0.1:{port}/metrics"

    def fetch(token):
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return parse(response.read().decode())

    def three_done():
        samples = fetch("worker-token")
        return samples if total(samples, "celery_task_succeeded_total", name=ping.name) == 3 else None

    samples = wait_for(three_done, message="3 pings in the worker's own metrics")
    assert total(samples, "celery_task_runtime_seconds_count", name=ping.name) == 3
    with pytest.raises(urllib.error.HTTPError) as refused:
        fetch("wrong")
    assert refused.value.code == 401


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_each_gunicorn_worker_counts_and_a_scrape_sees_the_sum(redis, settings, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_current_connection(),
        "REDIS_URL": settings.REDIS_URL,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),  # its own, so the sum is only these requests
    }
    command = [sys.executable, "-m", "gunicorn", "celeste.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "3"]
    with open(tmp_path.parent / "gunicorn.log", "w") as log:
        proc = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:

        def get(path):
            try:
                with urllib.request.urlopen(base + path, timeout=10) as response:
                    return response.read().decode()
            except OSError:
                return None

        wait_for(lambda: get("/api/v1/products/") is not None, timeout=90, message="gunicorn")
        before = parse(get("/metrics"))
        with ThreadPoolExecutor(12) as pool:  # concurrent, so more than one worker answers
            assert all(page is not None for page in pool.map(get, ["/api/v1/products/"] * 120))
        samples = parse(get("/metrics"))

        # the 120 requests of the burst (and the first scrape), summed over the workers' files
        answered = "django_http_responses_total_by_status_total"
        assert total(samples, answered, status="200") - total(before, answered, status="200") == 121
        per_process = [
            total(parse_file(path), "django_http_responses_total_by_status_total")
            for path in tmp_path.glob("counter_*.db")
        ]
        assert sum(1 for served in per_process if served) >= 2, per_process
    finally:
        proc.terminate()
        proc.wait(20)


def test_the_process_identifier_is_worked_out_once_and_again_after_a_fork_or_a_tag(monkeypatch):
    # prometheus-client asks for it on every increment: cached, but never a parent's copy.
    import multiprocessing

    from celeste import metrics

    monkeypatch.setattr(metrics, "_worker_tag", "")
    metrics._identifier_forget()
    assert metrics._process_identifier() == str(os.getpid())
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child_pid, child_identifier = pool.apply(_pid_and_identifier)
    assert child_identifier == str(child_pid) != str(os.getpid())
    metrics.worker_tag_set("celery@host")
    try:
        assert metrics._process_identifier() == f"wcelery@hostp{os.getpid()}"
    finally:
        metrics.worker_tag_set("")
    assert metrics._process_identifier() == str(os.getpid())


def _pid_and_identifier():
    from celeste import metrics

    return os.getpid(), metrics._process_identifier()
