"""The embedded default: private Postgres+pgvector and Redis in a folder of our own."""

import psycopg
import redis

from celeste.devserver import embedded


def test_ensure_services_starts_postgres_with_pgvector_and_redis_and_keeps_data(tmp_path):
    root = tmp_path / "var"
    root.mkdir()
    try:
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
    finally:
        embedded.stop_services(root)


def _conninfo(url: str) -> str:
    import dj_database_url

    params = dj_database_url.parse(url)
    return f"host={params['HOST']} user={params['USER']} dbname={params['NAME']}"
