"""Task switches, cached per process for a couple of seconds so an admin change
reaches every process quickly without a query per enqueue (or per task run,
where the breaker needs to know whether to count the outcome)."""

import threading
import time
from typing import NamedTuple

from django.conf import settings

from .models import BreakerState, TaskMode, TaskSwitch


class Switch(NamedTuple):
    mode: str = TaskMode.BACKGROUND
    breaker_enabled: bool = False
    breaker_state: str = BreakerState.CLOSED


_lock = threading.Lock()
_cache: dict[str, Switch] = {}
_loaded_at = float("-inf")


def task_switch(task_name: str) -> Switch:
    global _cache, _loaded_at
    with _lock:
        if time.monotonic() - _loaded_at > settings.TASK_SWITCH_CACHE_SECONDS:
            rows = TaskSwitch.objects.values_list("task_name", "mode", "breaker_enabled", "breaker_state")
            _cache = {name: Switch(*values) for name, *values in rows}
            _loaded_at = time.monotonic()
        return _cache.get(task_name, Switch())


def task_mode(task_name: str) -> str:
    return task_switch(task_name).mode


def forget_cached_switches() -> None:
    global _loaded_at
    with _lock:
        _loaded_at = float("-inf")
