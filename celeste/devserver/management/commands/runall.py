"""Run web, the stream process, the workers (fast; slow and images) and beat (and, with
``--flower``, Flower) as one process group with prefixed logs (``make run``)."""

import os
import signal
import subprocess
import sys
import threading
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from celeste import metrics
from celeste.devserver.processes import celery_command, worker_command
from celeste.flower import FlowerNotConfigured, flower_command

COLORS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[31m"]
RESET = "\033[0m"


class Command(BaseCommand):
    help = (
        "Set up (bootstrap) and run the web server, the stream (ASGI) server, Celery workers (fast; slow and images) "
        "and Celery beat (and Flower) until Ctrl-C."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--host",
            default=os.environ.get("CELESTE_HOST") or "127.0.0.1",
            help="address the web server listens on (default: CELESTE_HOST, else 127.0.0.1; now %(default)s)",
        )
        parser.add_argument(
            "--port",
            type=int,
            default=int(os.environ.get("CELESTE_PORT") or 8000),
            help="port the web server listens on (default: CELESTE_PORT, else 8000; now %(default)s)",
        )
        parser.add_argument(
            "--stream-port",
            type=int,
            default=int(os.environ.get("CELESTE_STREAM_PORT") or 8001),
            help="port of the live event stream's ASGI server, same host (default: CELESTE_STREAM_PORT, else 8001)",
        )
        parser.add_argument(
            "--no-demo", action="store_true", help="do not load the demo catalog into an empty database"
        )
        parser.add_argument(
            "--flower",
            action="store_true",
            help="Also run Flower (needs FLOWER_BASIC_AUTH=user:password; FLOWER_ADDRESS, FLOWER_PORT).",
        )

    def handle(self, *args, host, port, stream_port, no_demo, flower, **options):
        flower_argv = flower_env = None
        if flower:  # checked first: nothing starts if Flower would run without a login
            try:
                flower_argv, flower_env = flower_command()
            except FlowerNotConfigured as exc:
                raise CommandError(str(exc)) from exc
        call_command("bootstrap")
        if not no_demo:
            call_command("load_demo_catalog", if_empty=True)
        if metrics.enabled():
            # Counters start from zero with each run; every child writes beside the others.
            metrics.multiprocess_setup(os.environ["PROMETHEUS_MULTIPROC_DIR"], clean=True)
        processes, envs = stack_commands(host=host, port=port, stream_port=stream_port)
        if flower_argv:
            processes["flower"], envs["flower"] = flower_argv, flower_env
        group = ProcessGroup(processes, envs=envs)
        group.start()
        base = f"http://{host}:{port}"
        urls = f"  API        {base}/api/v1/\n  Swagger UI {base}/api/docs/\n  Admin      {base}/admin/\n"
        urls += f"  Metrics    {base}/metrics\n"
        urls += f"  Stream     http://{host}:{stream_port}/api/v1/notifications/stream (Server-Sent Events)\n"
        if flower_argv:
            urls += f"  Flower     {flower_url(flower_argv)}/ (login: FLOWER_BASIC_AUTH)\n"
        self.stdout.write(self.style.SUCCESS(f"\nCeleste is running:\n{urls}Press Ctrl-C to stop.\n"))
        sys.exit(group.wait())


# The workers' share of the CPU while a burst of slow work (embeddings, images) runs: they run at
# this niceness, and the embed job in one lane of one thread, so the web's requests keep their
# core (the load bench's isolation figure measures it; docs/operations.md, "Isolation").
WORKER_NICE_DEFAULT = "19"
WORKER_EMBEDDING_LANES_DEFAULT = "1"
WORKER_EMBEDDING_THREADS_DEFAULT = "1"
# Two workers, as compose's services are split. The fast queue's jobs (notifications, the order
# cache, Odoo) mostly wait on Postgres, Redis and the outside services: four processes keep it up
# with the write rate (two, sharing one worker with the slow queue, fell behind at 15 writes/s on
# the load bench's web tier). The slow work (embedding batches, image renders) is CPU-bound: two
# processes, so an image renders while a long embedding burst runs (with one, the images of the
# isolation step waited for the whole burst), each on one core at the workers' niceness.
WORKER_FAST_CONCURRENCY_DEFAULT = "4"
WORKER_SLOW_CONCURRENCY_DEFAULT = "2"


def stack_commands(*, host: str, port: int, stream_port: int) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """The processes ``runall`` starts, by name, and the environment of those that do not
    simply inherit ours (the load bench starts the same ones)."""
    python = sys.executable
    nice = int(os.environ.get("WORKER_NICE") or WORKER_NICE_DEFAULT)
    commands = {
        "web": [
            python,
            "-m",
            "gunicorn",
            "celeste.wsgi",
            "--bind",
            f"{host}:{port}",
            "--workers",
            os.environ.get("WEB_CONCURRENCY", "2"),
            "--threads",
            "4",
            "--access-logfile",
            "-",
        ],
        # The live event stream: uvicorn, thousands of idle connections on one event loop.
        "stream": [python, "-m", "celeste.asgi_server", "--host", host, "--port", str(stream_port)],
        # Node names as compose's (<queue>@<host>): two workers on one host need distinct ones.
        "worker": worker_command(
            queues="fast",
            concurrency=os.environ.get("WORKER_FAST_CONCURRENCY") or WORKER_FAST_CONCURRENCY_DEFAULT,
            extra=["-n", "fast@%h"],
            nice=nice,
        ),
        "worker-slow": worker_command(
            queues="slow,images",
            concurrency=os.environ.get("WORKER_SLOW_CONCURRENCY") or WORKER_SLOW_CONCURRENCY_DEFAULT,
            extra=["-n", "slow@%h"],
            nice=nice,
        ),
        "beat": celery_command("beat", "-l", "info"),
    }
    envs = {
        "worker-slow": {
            **os.environ,
            "EMBEDDING_LANES": os.environ.get("EMBEDDING_LANES") or WORKER_EMBEDDING_LANES_DEFAULT,
            "EMBEDDING_THREADS": os.environ.get("EMBEDDING_THREADS") or WORKER_EMBEDDING_THREADS_DEFAULT,
        }
    }
    return commands, envs


def flower_url(argv: list[str]) -> str:
    options = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    return f"http://{options['address']}:{options['port']}"


class ProcessGroup:
    """Children run in their own sessions, so Ctrl-C reaches only us and we
    stop them in order; if any child dies, the whole group stops. ``envs``: the
    environment of a child that does not simply inherit ours."""

    def __init__(self, commands: dict[str, list[str]], envs: dict[str, dict[str, str]] | None = None):
        self.commands = commands
        self.envs = envs or {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.stopping = threading.Event()
        self.forcing = threading.Event()

    def start(self):
        width = max(map(len, self.commands))
        for index, (name, command) in enumerate(self.commands.items()):
            proc = subprocess.Popen(
                command,
                env=self.envs.get(name),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                text=True,
                bufsize=1,
            )
            self.procs[name] = proc
            prefix = f"{COLORS[index % len(COLORS)]}{name:<{width}} |{RESET} "
            threading.Thread(target=self._pump, args=(proc, prefix), daemon=True).start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, *_):
        # The first Ctrl-C stops warmly (the worker finishes its running tasks); a second kills.
        if self.stopping.is_set():
            self.forcing.set()
        self.stopping.set()

    @staticmethod
    def _pump(proc, prefix):
        for line in proc.stdout:
            sys.stdout.write(prefix + line)
            sys.stdout.flush()

    def wait(self) -> int:
        exit_code = 0
        while not self.stopping.is_set():
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; stopping the rest.", flush=True)
                    exit_code = proc.returncode or 1
                    self.stopping.set()
            self.stopping.wait(0.5)
        self.stop()
        return exit_code

    def stop(self, timeout: float | None = None):
        # As long as a task may run (its hard time limit): a warm shutdown finishes them.
        timeout = timeout if timeout is not None else settings.CELERY_TASK_TIME_LIMIT
        print(
            "Stopping web, stream, workers and beat (the workers finish their running tasks; Ctrl-C again to kill)…",
            flush=True,
        )
        for proc in self.procs.values():
            if proc.poll() is None:
                # To the main process only: a signal to the whole group would also reach the
                # worker's pool children and end their tasks; their main process stops them
                # once the tasks are done (Celery's warm shutdown, gunicorn's graceful stop).
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            while proc.poll() is None and time.monotonic() < deadline and not self.forcing.is_set():
                self.forcing.wait(0.2)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        print("Stopped.", flush=True)
