"""Request throttles: DRF's throttling, counted in the Django cache (Redis).

- ``AnonReadThrottle``: safe-method requests without a login, per client address.
- ``UserWriteThrottle``: POST/PUT/PATCH/DELETE of a signed-in user, per user.
- ``LoginIPThrottle``, ``LoginUsernameThrottle``: failed logins on the token view
  (``celeste/api/auth.py``), per client address and per username; a successful login
  uses none of the budget.

A throttled request gets a 429 with ``Retry-After`` (DRF's ``Throttled``). Rates are
``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` (from THROTTLE_* variables), read per request:
DRF copies them onto the class when it is imported, so a changed setting (tests) would
otherwise be ignored. While Redis is unreachable every throttle lets requests through
(fail open, logged): losing the limits for a while is better than refusing the shop.
Base package: no domain imports.
"""

import hashlib
import logging

from redis.exceptions import RedisError
from rest_framework.permissions import SAFE_METHODS
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)


class CelesteThrottle(SimpleRateThrottle):
    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except RedisError as exc:
            _log_unavailable(self, exc)
            return True


def _log_unavailable(throttle, exc: Exception) -> None:
    logger.warning("throttle.cache_unavailable", extra={"scope": throttle.scope, "error": repr(exc)})


class AnonReadThrottle(CelesteThrottle):
    scope = "anon_reads"

    def get_cache_key(self, request, view):
        if request.user.is_authenticated or request.method not in SAFE_METHODS:
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class UserWriteThrottle(CelesteThrottle):
    scope = "writes"

    def get_cache_key(self, request, view):
        if not request.user.is_authenticated or request.method in SAFE_METHODS:
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class FailureThrottle(CelesteThrottle):
    """Counts failures, not requests: ``allow_request`` only compares the recent failures
    with the rate, and the view calls ``failure_record`` when an attempt failed. Two
    attempts at the same moment may both pass the check (as with DRF's own throttles)."""

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        try:
            self.history = self._recent()
        except RedisError as exc:
            _log_unavailable(self, exc)
            return True
        return len(self.history) < self.num_requests

    def failure_record(self, request, view) -> None:
        if self.rate is None:
            return
        key = self.get_cache_key(request, view)
        if key is None:
            return
        self.key = key
        try:
            history = self._recent()
            history.insert(0, self.now)
            self.cache.set(key, history, self.duration)
        except RedisError as exc:
            _log_unavailable(self, exc)

    def _recent(self) -> list[float]:
        self.now = self.timer()
        history = self.cache.get(self.key, [])
        while history and history[-1] <= self.now - self.duration:
            history.pop()
        return history


class LoginIPThrottle(FailureThrottle):
    scope = "login_ip"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginUsernameThrottle(FailureThrottle):
    scope = "login_username"

    def get_cache_key(self, request, view):
        username = request.data.get("username") if hasattr(request.data, "get") else None
        if not isinstance(username, str) or not username:
            return None
        # Hashed: any text can be a username attempt, and keys should not carry it.
        digest = hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": digest}
