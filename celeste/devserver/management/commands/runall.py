"""Run web, worker and beat as one process group with prefixed logs (``make run``)."""

import os
import signal
import subprocess
import sys
import threading
import time

from django.core.management import call_command
from django.core.management.base import BaseCommand

from celeste import metrics

COLORS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m"]
RESET = "\033[0m"


class Command(BaseCommand):
    help = "Set up (bootstrap) and run the web server, a Celery worker and Celery beat until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("CELESTE_HOST") or "127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("CELESTE_PORT") or 8000))
        parser.add_argument("--no-demo", action="store_true")

    def handle(self, *args, host, port, no_demo, **options):
        call_command("bootstrap")
        if not no_demo:
            call_command("load_demo_catalog", if_empty=True)
        if metrics.enabled():
            # Counters start from zero with each run; every child writes beside the others.
            metrics.multiprocess_setup(os.environ["PROMETHEUS_MULTIPROC_DIR"], clean=True)
        python = sys.executable
        processes = {
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
            "worker": [
                python,
                "-m",
                "celery",
                "-A",
                "celeste",
                "worker",
                "-Q",
                "slow,fast",
                "--concurrency",
                os.environ.get("WORKER_CONCURRENCY", "2"),
                "-l",
                "info",
            ],
            "beat": [python, "-m", "celery", "-A", "celeste", "beat", "-l", "info"],
        }
        group = ProcessGroup(processes)
        group.start()
        base = f"http://{host}:{port}"
        self.stdout.write(
            self.style.SUCCESS(
                f"\nCeleste is running:\n  API        {base}/api/v1/\n  Swagger UI {base}/api/docs/\n"
                f"  Admin      {base}/admin/\n  Metrics    {base}/metrics\nPress Ctrl-C to stop.\n"
            )
        )
        sys.exit(group.wait())


class ProcessGroup:
    """Children run in their own sessions, so Ctrl-C reaches only us and we
    stop them in order; if any child dies, the whole group stops."""

    def __init__(self, commands: dict[str, list[str]]):
        self.commands = commands
        self.procs: dict[str, subprocess.Popen] = {}
        self.stopping = threading.Event()

    def start(self):
        width = max(map(len, self.commands))
        for index, (name, command) in enumerate(self.commands.items()):
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True, bufsize=1
            )
            self.procs[name] = proc
            prefix = f"{COLORS[index % len(COLORS)]}{name:<{width}} |{RESET} "
            threading.Thread(target=self._pump, args=(proc, prefix), daemon=True).start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.stopping.set())

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

    def stop(self, timeout: float = 20):
        print("Stopping web, worker and beat…", flush=True)
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        print("Stopped.", flush=True)
