"""Run the benchmarks: ``python -m bench [names...] [--quick]``; ``python -m bench search --products N``.

Setup, before Django is imported: the embedded Postgres/Redis of ``var/bench``
(never the dev ones), a fresh ``celeste_bench`` database, a flushed Redis, and
switch changes that apply at once. The bench Postgres gets shared_buffers=1GB
(a restart, once): the embedded dev default of 128MB holds neither the 100k
vectors nor their HNSW index, which no production database would be sized
like. Then every selected benchmark runs in this one process and a summary
table closes the run. The machine's load average is printed along: other
processes on the same 2 cores make every figure noisier.
"""

import argparse
import fcntl
import importlib
import os
import shutil
import sys
import time
import warnings

from bench import BASE_DIR, DATABASE_NAME, Result

SHARED_BUFFERS = "1GB"
BENCHMARKS = {
    "post_product": "bench.post_product",
    "task_throughput": "bench.task_throughput",
    "metrics_cost": "bench.metrics_cost",
    "safety_cost": "bench.safety_cost",
    "embedding_pipeline": "bench.embedding_pipeline",
    "search": "bench.search",
    "search_quality": "bench.search_quality",
    "orders": "bench.orders",
    "notifications": "bench.notifications",
    "odoo_sync": "bench.odoo_sync",
    "popularity": "bench.popularity",
    "reports": "bench.reports",
    "images": "bench.images",
    "stream": "bench.stream",
    "load": "bench.load",
}


def hold_run_lock(var_dir) -> None:
    """One bench run at a time: another would drop this run's database under it."""
    var_dir.mkdir(parents=True, exist_ok=True)
    global _run_lock
    _run_lock = open(var_dir / "bench-run.lock", "w")  # held until this process exits
    try:
        fcntl.flock(_run_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("Another `python -m bench` is running on var/bench; waiting for it to finish ...", flush=True)
        fcntl.flock(_run_lock, fcntl.LOCK_EX)


def setup() -> None:
    hold_run_lock(BASE_DIR / "var" / "bench")
    os.environ["CELESTE_VAR_DIR"] = str(BASE_DIR / "var" / "bench")
    os.environ["TASK_SWITCH_CACHE_SECONDS"] = "0"
    os.environ["DJANGO_SETTINGS_MODULE"] = "celeste.settings.local"
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # per-request INFO events would drown the figures
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Throttles stay on (their cost is part of every request) but are never reached.
    for name in (
        "THROTTLE_LOGIN_PER_IP",
        "THROTTLE_LOGIN_PER_USERNAME",
        "THROTTLE_WRITES_PER_USER",
        "THROTTLE_ANON_READS",
    ):
        os.environ.setdefault(name, "1000000/min")
    warnings.filterwarnings("ignore", module="platformdirs")
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)

    import psycopg
    import redis

    from celeste.devserver import embedded

    root = embedded.var_dir()
    shutil.rmtree(root / "metrics", ignore_errors=True)  # counters of earlier runs' processes
    embedded.ensure_services(root)
    with psycopg.connect(embedded.database_url(root, name="postgres"), autocommit=True) as conn:
        restart = conn.execute("SHOW shared_buffers").fetchone()[0] != SHARED_BUFFERS
        if restart:
            conn.execute(f"ALTER SYSTEM SET shared_buffers = '{SHARED_BUFFERS}'")
    if restart:
        embedded.stop_postgres(root)
        embedded.ensure_services(root)
    with psycopg.connect(embedded.database_url(root, name="postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE_NAME}")
    os.environ["DATABASE_URL"] = embedded.database_url(root, name=DATABASE_NAME)
    os.environ["REDIS_URL"] = embedded.redis_url(root)
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushall()

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def summary(results: list[Result]) -> None:
    print("\n" + "=" * 100)
    print("Summary (every ratio compares figures measured in this run)")
    print("=" * 100)
    bench = None
    for result in results:
        if result.bench != bench:
            bench = result.bench
            print(f"[{bench}]")
        print(result.line())
    targets = [r for r in results if r.target]
    missed = [r for r in targets if r.verdict == "MISS"]
    print("-" * 100)
    print(
        f"{len(targets) - len(missed)}/{len(targets)} targets met"
        + (f"; missed: {', '.join(r.label for r in missed)}" if missed else "")
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", metavar="name", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, figures are noisier)")
    parser.add_argument(
        "--products",
        type=int,
        metavar="N",
        help="search only: the corpus size (default 100k, 10k with --quick), e.g. 1000000; long at 1M",
    )
    args = parser.parse_args(argv)
    if args.products is not None and (args.names != ["search"] or args.products < 1000):
        parser.error(
            "--products N (N >= 1000) goes with the search benchmark alone: python -m bench search --products N"
        )
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)

    started = time.monotonic()
    print(
        f"Setting up (var/bench, database {DATABASE_NAME}){' [quick]' if args.quick else ''}; {load()} ...", flush=True
    )
    setup()
    results: list[Result] = []
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        print(f"\n== {name}: {module.__doc__.strip().splitlines()[0]}  ({load()})", flush=True)
        bench_started = time.monotonic()
        results += module.run(quick=args.quick, **({"products": args.products} if args.products else {}))
        print(f"  ({time.monotonic() - bench_started:.0f} s; {load()})", flush=True)
    summary(results)
    print(f"Total time: {time.monotonic() - started:.0f} s; {load()} (2 cores: above ~0.5 other work was competing)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
