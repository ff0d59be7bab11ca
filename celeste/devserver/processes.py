"""Celery command lines (runall's too), and real Celery workers started as subprocesses (tests and benchmarks)."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

BASE_DIR = Path(__file__).resolve().parents[2]


def database_url_for_current_connection() -> str:
    """A DATABASE_URL for the database this process is connected to (the test
    database under pytest), so a worker subprocess sees the same rows."""
    from urllib.parse import quote

    params = connection.settings_dict
    host = quote(params["HOST"] or "", safe="")
    port = f":{params['PORT']}" if params.get("PORT") else ""
    auth = params["USER"] + (f":{quote(params['PASSWORD'], safe='')}" if params.get("PASSWORD") else "")
    return f"postgres://{auth}@{host}{port}/{params['NAME']}"


def child_environment(env: dict | None = None) -> dict:
    """Ours, pointed at this process's database and Redis, with ``env`` on top."""
    return {
        **os.environ,
        "DATABASE_URL": database_url_for_current_connection(),
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "celeste.settings.local"),
        **(env or {}),
    }


class Worker:
    def __init__(self, proc: subprocess.Popen, log_path: Path):
        self.proc = proc
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children) at once."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def celery_command(*args: str) -> list[str]:
    """``celery -A celeste …`` with this interpreter: one spelling for runall, tests and benchmarks."""
    return [sys.executable, "-m", "celery", "-A", "celeste", *args]


def worker_command(*, queues: str, concurrency: int | str, extra: list[str] = (), nice: int = 0) -> list[str]:
    """A prefork ``celery worker`` (Celery's default pool) on ``queues``; at niceness ``nice`` (of
    the process and of its session's autogroup: a plain ``nice`` would not count against a process
    of another session, see niceness.py)."""
    niced = [sys.executable, "-m", "celeste.devserver.niceness", str(nice)] if nice else []
    return [*niced, *celery_command("worker", "-Q", queues, "--concurrency", str(concurrency), "-l", "info", *extra)]


# Tests start workers without the cluster features (gossip, mingle, heartbeat): they start faster.
LEAN_WORKER_ARGS = ["--without-gossip", "--without-mingle", "--without-heartbeat"]


def spawn_worker(
    *,
    queues: str = "slow,images,fast",
    concurrency: int = 1,
    env: dict | None = None,
    log_dir: Path,
    lean: bool = True,
    node_name: str | None = None,
    nice: int = 0,
) -> Worker:
    """Start ``celery worker`` against this process's database and broker; returns at once
    (``wait_until_ready`` waits for it). ``node_name`` (``-n``, e.g. ``w1@%h``) must differ
    between workers of one broker; celery's default is ``celery@<host name>``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    label = f"-{node_name.split('@')[0]}" if node_name else ""
    log_path = log_dir / f"worker{label}-{time.time_ns()}.log"
    child_env = child_environment(env)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            worker_command(
                queues=queues,
                concurrency=concurrency,
                extra=[*(["-n", node_name] if node_name else []), *(LEAN_WORKER_ARGS if lean else [])],
                nice=nice,
            ),
            cwd=BASE_DIR,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Worker(proc, log_path)


@contextmanager
def celery_worker(**options):
    """Run ``celery worker`` (``spawn_worker``'s options) until the block ends.
    ``lean=False`` keeps gossip, mingle and heartbeat on, as ``runall`` and compose run it."""
    worker = spawn_worker(**options)
    try:
        wait_until_ready(worker)
        yield worker
    finally:
        worker.stop()


@contextmanager
def celery_workers(node_names: list[str], **options):
    """Several workers (``spawn_worker``'s options), one per node name, booting side by side
    (not one after the other); all are stopped when the block ends."""
    workers = []
    try:
        for node_name in node_names:
            workers.append(spawn_worker(node_name=node_name, **options))
        for worker in workers:
            wait_until_ready(worker)
        yield workers
    finally:
        for worker in workers:  # SIGTERM to all first: their warm shutdowns overlap
            if worker.proc.poll() is None:
                os.killpg(worker.proc.pid, signal.SIGTERM)
        for worker in workers:
            worker.stop()


def wait_until_ready(worker: Worker, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while " ready." not in worker.log():
        if worker.proc.poll() is not None:
            raise RuntimeError(f"celery worker exited early:\n{worker.log()[-5000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"celery worker not ready after {timeout}s:\n{worker.log()[-5000:]}")
        time.sleep(0.1)


@contextmanager
def celery_beat(*, env: dict | None = None, log_dir: Path):
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"beat-{time.time_ns()}.log"
    child_env = child_environment(env)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            celery_command("beat", "-l", "info", "--schedule", str(log_dir / "beat-schedule"), "--max-interval", "1"),
            cwd=BASE_DIR,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    beat = Worker(proc, log_path)
    try:
        yield beat
    finally:
        beat.stop()


class AsgiServer(Worker):
    """``python -m celeste.asgi_server`` on a loopback port (tests and benchmarks)."""

    def __init__(self, proc: subprocess.Popen, log_path: Path, port: int):
        super().__init__(proc, log_path)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


@contextmanager
def asgi_server(*, env: dict | None = None, log_dir: Path, timeout: float = 60):
    """Run the ASGI server against this process's database and Redis until the block ends."""
    import socket

    from .loopback import free_port

    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"asgi-{time.time_ns()}.log"
    port = free_port()
    child_env = child_environment(env)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celeste.asgi_server", "--port", str(port), "--graceful-seconds", "5"],
            cwd=BASE_DIR,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = AsgiServer(proc, log_path, port)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the ASGI server did not start:\n{server.log()[-5000:]}") from None
                time.sleep(0.1)
        yield server
    finally:
        server.stop()
