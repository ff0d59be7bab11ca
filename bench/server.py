"""A gunicorn process serving the API to a benchmark over real HTTP on loopback."""

import http.client
import json
import os
import subprocess
import sys
import time

from bench import BASE_DIR
from celeste.devserver.loopback import free_port
from celeste.devserver.processes import database_url_for_current_connection

LOG_DIR = BASE_DIR / "var" / "bench" / "logs"


class Server:
    """One gunicorn worker process on the bench's database, with ``env`` on top of ours."""

    def __init__(self, name: str, env: dict[str, str]):
        self.port = free_port()
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"gunicorn-{name}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "celeste.wsgi", "--workers", "1", "--bind", f"127.0.0.1:{self.port}"],
            cwd=BASE_DIR,
            env={**os.environ, "DATABASE_URL": database_url_for_current_connection(), **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self.connection.request("GET", "/api/v1/stores/")
                self.connection.getresponse().read()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"gunicorn did not start: {self.log_path.read_text()[-2000:]}") from None
                time.sleep(0.3)

    def post(self, path: str, body: dict, *, expect: int, headers: dict[str, str] | None = None) -> float:
        """POST ``body`` as JSON on the kept-alive connection; the seconds until the response was read."""
        start = time.perf_counter()
        self.connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
        response = self.connection.getresponse()
        content = response.read()
        elapsed = time.perf_counter() - start
        assert response.status == expect, (response.status, content[:500])
        return elapsed

    def stop(self):
        self.connection.close()
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()
