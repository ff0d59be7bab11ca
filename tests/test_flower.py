"""Flower (celeste/flower.py: ``make flower``, ``runall --flower``): never without a login;
a real Flower against the test Redis shows a real worker and the tasks it ran, through
its HTTP API, to its login only."""

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from celeste.background.queue import enqueue
from celeste.background.tasks import ping
from celeste.devserver.loopback import free_port
from celeste.devserver.processes import BASE_DIR, database_url_for_current_connection
from celeste.flower import DEFAULT_ADDRESS, DEFAULT_PORT, FlowerNotConfigured, flower_command

from .conftest import LOG_DIR, published, wait_for

LOGIN = "ops:a-long-flower-password"


def get(url: str, login: str | None = None) -> tuple[int, str]:
    """(status, body) of a GET, with HTTP basic auth if ``login`` is given; 0 if nothing answers."""
    request = urllib.request.Request(url)
    if login is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return 0, ""


# --- the command: no login, no Flower ----------------------------------------------


@pytest.mark.parametrize("value", ["", "   ", "ops", "ops:", ":secret", "ops:secret,viewer"])
def test_flower_refuses_a_missing_or_malformed_login(value):
    with pytest.raises(FlowerNotConfigured, match="FLOWER_BASIC_AUTH"):
        flower_command({"FLOWER_BASIC_AUTH": value})


def test_flower_listens_on_loopback_by_default_and_keeps_the_password_off_the_command_line():
    argv, env = flower_command({"FLOWER_BASIC_AUTH": f"{LOGIN}, viewer:other", "FLOWER_PORT": "", "PATH": "/bin"})

    assert argv[1:] == [
        "-m",
        "celery",
        "-A",
        "celeste",
        "flower",
        f"--address={DEFAULT_ADDRESS}",
        f"--port={DEFAULT_PORT}",
    ]
    assert not any("password" in arg for arg in argv)
    assert env["FLOWER_BASIC_AUTH"] == f"{LOGIN},viewer:other"  # Flower reads it from its environment
    assert "FLOWER_PORT" not in env and env["PATH"] == "/bin"


def test_flower_takes_address_and_port_from_the_environment_and_never_an_unauthenticated_api():
    argv, env = flower_command(
        {
            "FLOWER_BASIC_AUTH": LOGIN,
            "FLOWER_ADDRESS": "0.0.0.0",
            "FLOWER_PORT": "6000",
            "FLOWER_UNAUTHENTICATED_API": "1",
        }
    )

    assert argv[-2:] == ["--address=0.0.0.0", "--port=6000"]
    assert "FLOWER_UNAUTHENTICATED_API" not in env
    with pytest.raises(FlowerNotConfigured, match="FLOWER_PORT"):
        flower_command({"FLOWER_BASIC_AUTH": LOGIN, "FLOWER_PORT": "http"})


def test_make_flower_without_a_login_exits_with_a_clear_message():
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLOWER_")}

    done = subprocess.run(
        [sys.executable, "-m", "celeste.flower"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 2
    assert "FLOWER_BASIC_AUTH=user:password" in done.stderr


def test_runall_with_flower_and_no_login_starts_nothing(monkeypatch):
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    with pytest.raises(CommandError, match="FLOWER_BASIC_AUTH"):
        call_command("runall", "--flower")  # refused before bootstrap: no database needed


# --- a real Flower ----------------------------------------------------------------


@contextmanager
def flower(login: str = LOGIN):
    """Flower as ``make flower`` runs it, on a free loopback port, against this test's
    database and Redis; always stopped (SIGTERM, then SIGKILL) when the block ends."""
    port = free_port()
    argv, env = flower_command(
        {
            **os.environ,
            "DATABASE_URL": database_url_for_current_connection(),
            "REDIS_URL": django_settings.REDIS_URL,
            "FLOWER_BASIC_AUTH": login,
            "FLOWER_PORT": str(port),
        }
    )
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"flower-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            argv, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: proc.poll() is not None or get(f"{base}/healthcheck")[0] == 200,
            timeout=60,
            message="Flower to answer",
        )
        assert proc.poll() is None, f"Flower exited:\n{log_path.read_text()[-5000:]}"
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def api(url: str) -> dict:
    status, body = get(url, LOGIN)
    assert status == 200, (status, body[:500])
    return json.loads(body)


def flower_task(base: str, job_id: str) -> dict | None:
    task = api(f"{base}/api/tasks?taskname={ping.name}").get(job_id)
    return task if task and task.get("state") == "SUCCESS" else None


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_flower_shows_the_worker_and_its_tasks_to_its_login_only(start_worker):
    # As runall and compose run it (gossip and heartbeat on, so its event dispatcher is on):
    # its task events are off until Flower turns them on (CELERY_WORKER_SEND_TASK_EVENTS).
    worker = start_worker(lean=False)
    with flower() as base:
        # The worker, as the broker's remote control reaches it (the same process we started).
        workers = wait_for(lambda: api(f"{base}/api/workers?refresh=1"), timeout=30, message="the worker in Flower")
        ((name, info),) = workers.items()
        assert info["stats"]["pid"] == worker.proc.pid
        assert ping.name in info["registered"]

        # A job through the whole path (outbox → Redis → worker): Flower saw it from the
        # events (task-sent from this process, received/started/succeeded from the worker).
        # Flower's event receiver may connect a moment after its HTTP server: a job sent
        # before that is not seen, so one more is sent if the first does not show up.
        for attempt in range(3):
            job = enqueue(ping)
            published()
            try:
                task = wait_for(
                    lambda job_id=str(job.id): flower_task(base, job_id), timeout=15, message="the job in Flower"
                )
                break
            except AssertionError:
                if attempt == 2:
                    raise
        assert (task["name"], task["worker"], task["result"]) == (ping.name, name, "'pong'")
        assert task["sent"] is not None  # the publisher's task-sent event (CELERY_TASK_SEND_SENT_EVENT)
        assert "Events of group {task} enabled by remote" in worker.log()  # Flower asked for them

        # Without the login, or with a wrong one: 401, for the API and the pages.
        for path in ("/api/workers", "/api/tasks", f"/api/task/info/{job.id}", "/", "/tasks"):
            assert get(f"{base}{path}")[0] == 401, path
            assert get(f"{base}{path}", "ops:wrong-password")[0] == 401, path
            assert get(f"{base}{path}", "intruder:a-long-flower-password")[0] == 401, path
        assert get(f"{base}/tasks", LOGIN)[0] == 200
