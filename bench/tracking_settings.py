"""Local settings plus the benchmark's synchronous tracking route (bench/tracking_sync.py)."""

from celeste.settings.local import *  # noqa: F403

ROOT_URLCONF = "bench.tracking_sync"
