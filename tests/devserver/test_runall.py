"""Command 1's process group: web, the stream process, worker and beat (and Flower with
--flower) up with URLs printed; Ctrl-C stops them all."""

import base64
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from celeste.devserver.loopback import free_port
from celeste.devserver.processes import BASE_DIR, database_url_for_current_connection

from ..conftest import wait_for


def http_status(url: str, login: str | None = None) -> int:
    request = urllib.request.Request(url)
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_runall_serves_the_api_admin_docs_and_flower_and_ctrl_c_stops_everything(redis, settings, tmp_path):
    port, stream_port, flower_port = free_port(), free_port(), free_port()
    log_path = tmp_path / "runall.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_current_connection(),
        "REDIS_URL": settings.REDIS_URL,
        "CELESTE_ADMIN_PASSWORD": "a-long-test-password",
        "WEB_CONCURRENCY": "1",
        "WORKER_FAST_CONCURRENCY": "1",
        # runall empties its metrics directory at start: not the one this suite writes to.
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "FLOWER_BASIC_AUTH": "ops:a-long-flower-password",
        "FLOWER_PORT": str(flower_port),
    }
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "runall", "--port", str(port), "--stream-port", str(stream_port), "--flower"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_status(f"{base}/api/v1/products/") == 200, timeout=120, message="the API")
        output = log_path.read_text()
        assert f"{base}/api/v1/" in output and f"{base}/api/docs/" in output and f"{base}/admin/" in output
        assert "a-long-test-password" not in output
        assert http_status(f"{base}/api/docs/") == 200
        assert http_status(f"{base}/admin/login/") == 200
        assert http_status(f"{base}/metrics") == 200  # loopback, no METRICS_TOKEN set
        assert http_status(f"{base}/static/admin/css/base.css") == 200
        stream = f"http://127.0.0.1:{stream_port}/api/v1/notifications/stream"
        assert stream in output
        wait_for(lambda: http_status(stream) == 401, timeout=60, message="the stream process")  # no credentials
        for name in ("worker", "worker-slow"):  # the fast queue's and the slow and images queues'
            wait_for(
                lambda n=name: re.search(rf"{n}\s+\|[^\n]* ready\.", log_path.read_text()), timeout=60, message=name
            )
        wait_for(lambda: re.search(r"beat\s+\|", log_path.read_text()), timeout=60, message="beat")
        flower = f"http://127.0.0.1:{flower_port}"
        assert f"{flower}/" in output and "a-long-flower-password" not in output
        wait_for(lambda: http_status(f"{flower}/healthcheck") == 200, timeout=60, message="Flower")
        assert http_status(f"{flower}/api/workers") == 401
        assert http_status(f"{flower}/api/workers", "ops:a-long-flower-password") == 200
        assert re.search(r"flower\s+\|", log_path.read_text())

        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        time.sleep(0.5)
        children = subprocess.run(["pgrep", "-f", f"--bind 127.0.0.1:{port}"], capture_output=True, text=True)
        assert children.stdout.strip() == "", "gunicorn still running"
        assert http_status(stream) == 0, "the stream process still running"
        assert http_status(f"{flower}/healthcheck") == 0, "Flower still running"
        assert "Stopped." in log_path.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_runall_starts_a_fast_worker_and_a_slow_one_niced_with_one_encoder_lane_of_one_thread(monkeypatch):
    """The isolation settings (docs/operations.md): the web keeps a core during a burst of slow work,
    and the fast queue has processes of its own while an embedding batch or an image render runs."""
    from celeste.devserver.management.commands.runall import stack_commands

    for name in (
        "WORKER_NICE",
        "EMBEDDING_THREADS",
        "EMBEDDING_LANES",
        "WORKER_FAST_CONCURRENCY",
        "WORKER_SLOW_CONCURRENCY",
    ):
        monkeypatch.delenv(name, raising=False)
    commands, envs = stack_commands(host="127.0.0.1", port=8000, stream_port=8001)

    def option(command, flag):
        return command[command.index(flag) + 1]

    for name, queues, concurrency, node in (
        ("worker", "fast", "4", "fast@%h"),
        ("worker-slow", "slow,images", "2", "slow@%h"),
    ):
        assert commands[name][:4] == [sys.executable, "-m", "celeste.devserver.niceness", "19"], name
        assert (option(commands[name], "-Q"), option(commands[name], "--concurrency")) == (queues, concurrency)
        assert option(commands[name], "-n") == node
    assert (envs["worker-slow"]["EMBEDDING_LANES"], envs["worker-slow"]["EMBEDDING_THREADS"]) == ("1", "1")
    assert "worker" not in envs  # the fast worker never encodes
    assert commands["web"][0] == sys.executable and "web" not in envs  # the web keeps its priority and threads

    monkeypatch.setenv("WORKER_NICE", "0")
    monkeypatch.setenv("EMBEDDING_THREADS", "2")
    monkeypatch.setenv("WORKER_SLOW_CONCURRENCY", "1")
    commands, envs = stack_commands(host="127.0.0.1", port=8000, stream_port=8001)
    assert commands["worker"][:3] == commands["worker-slow"][:3] == [sys.executable, "-m", "celery"]
    assert envs["worker-slow"]["EMBEDDING_THREADS"] == "2"
    assert option(commands["worker-slow"], "--concurrency") == "1"


def test_the_niced_worker_yields_to_a_process_of_another_session():
    """`nice -n 10` alone does not count against a process in another session where the kernel
    schedules by autogroup (runall starts each process in its own session): the wrapper sets
    the niceness of the process and of its session's autogroup, which its children inherit."""
    probe = "import os, pathlib; print(os.getpriority(os.PRIO_PROCESS, 0)); p = pathlib.Path('/proc/self/autogroup')"
    probe += "; print(p.read_text() if p.exists() else '')"
    done = subprocess.run(
        [sys.executable, "-m", "celeste.devserver.niceness", "7", sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=BASE_DIR,
        start_new_session=True,  # as runall starts it: a session, hence an autogroup, of its own
    )
    niceness, autogroup = (done.stdout.splitlines() + [""])[:2]
    assert niceness == "7", done.stderr
    if os.path.exists("/proc/self/autogroup"):
        assert autogroup.endswith("nice 7")
