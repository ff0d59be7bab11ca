"""Task switches, cached per process for a couple of seconds so an admin change
reaches every process quickly without a query per enqueue."""

import threading
import time

from django.conf import settings

from .models import TaskMode, TaskSwitch

_lock = threading.Lock()
_cache: dict[str, str] = {}
_loaded_at = float("-inf")


def task_mode(task_name: str) -> str:
    global _cache, _loaded_at
    with _lock:
        if time.monotonic() - _loaded_at > settings.TASK_SWITCH_CACHE_SECONDS:
            _cache = dict(TaskSwitch.objects.values_list("task_name", "mode"))
            _loaded_at = time.monotonic()
        return _cache.get(task_name, TaskMode.BACKGROUND)


def forget_cached_switches() -> None:
    global _loaded_at
    with _lock:
        _loaded_at = float("-inf")
