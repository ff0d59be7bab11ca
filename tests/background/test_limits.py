"""Concurrency limits per task type: a Redis semaphore whose slots expire, so a
killed worker cannot hold one forever (real workers under a limit:
tests/integrations/test_sync_limits.py)."""

import time

from celeste.background import limits
from celeste.devserver import embedded


def test_slots_up_to_the_limit_then_none_until_one_is_released(redis):
    first = limits.slot_acquire("tests.limited", limit=2, hold_seconds=60)
    second = limits.slot_acquire("tests.limited", limit=2, hold_seconds=60)

    assert first and second and first != second
    assert limits.slot_acquire("tests.limited", limit=2, hold_seconds=60) is None
    limits.slot_release("tests.limited", first)
    assert limits.slot_acquire("tests.limited", limit=2, hold_seconds=60)
    assert limits.slots_held("tests.limited") == 2


def test_a_slot_a_killed_worker_held_frees_itself_when_it_expires(redis):
    assert limits.slot_acquire("tests.limited", limit=1, hold_seconds=0.5)  # never released
    assert limits.slot_acquire("tests.limited", limit=1, hold_seconds=60) is None

    time.sleep(0.6)

    assert limits.slot_acquire("tests.limited", limit=1, hold_seconds=60)


def test_while_redis_is_down_the_limit_is_not_enforced(redis, embedded_root):
    embedded.stop_redis(embedded_root)
    try:
        assert limits.slot_acquire("tests.limited", limit=1, hold_seconds=60)
        assert limits.slot_acquire("tests.limited", limit=1, hold_seconds=60)
        limits.slot_release("tests.limited", "whatever")  # logged, not raised
    finally:
        embedded.start_redis(embedded_root)
