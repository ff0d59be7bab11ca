"""The test suite (pytest.ini): its own embedded servers under var/test, never
the dev data; switch changes and fresh outbox rows visible at once; throttle
rates too high to reach; a fast password hasher. Environment variables still
win, and worker subprocesses the tests start inherit this module."""

import os
import sys
from pathlib import Path

_DEFAULTS = {
    "CELESTE_VAR_DIR": str(Path(__file__).resolve().parents[2] / "var" / "test"),
    "TASK_SWITCH_CACHE_SECONDS": "0",
    "OUTBOX_RELAY_MIN_AGE_SECONDS": "0",
    "QUEUE_DEPTH_CACHE_SECONDS": "0",
    # The suite sends many requests from one address and user: throttles on, never reached.
    # Throttling itself is tested with low rates set per test (tests/api/test_throttling.py).
    "THROTTLE_LOGIN_PER_IP": "1000000/min",
    "THROTTLE_LOGIN_PER_USERNAME": "1000000/min",
    "THROTTLE_WRITES_PER_USER": "1000000/min",
    "THROTTLE_ANON_READS": "1000000/min",
}
for _name, _value in _DEFAULTS.items():
    os.environ.setdefault(_name, _value)

from .local import *  # noqa: E402, F403
from .local import METRICS_ENABLED  # noqa: E402

if METRICS_ENABLED and "pytest" in sys.modules:
    # The suite's own process empties the metrics directory before its first metric
    # exists; the worker subprocesses it starts (not pytest) write beside it.
    from celeste import metrics

    metrics.multiprocess_setup(os.environ["PROMETHEUS_MULTIPROC_DIR"], clean=True)

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed, not security
