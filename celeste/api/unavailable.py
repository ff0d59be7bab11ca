"""While the database is unreachable (restart, failover, network), requests get a
503 with ``Retry-After`` instead of a 500: the client should retry, and nothing is
wrong with its request or with our code.

Only the errors of the database's availability qualify: ``OperationalError`` (cannot
connect, connection lost, server shutting down or starting up; the class also covers the
other transient conditions a retry cures: deadlock, serialization failure, a statement
cancelled by a timeout) and ``InterfaceError`` (connection already closed). An
``IntegrityError``, a ``ProgrammingError`` or any other error surfaces as before (a 500 is a
bug). An ``Unavailable`` (celeste/api/errors.py: Redis did not confirm a write that
lives only there, e.g. a tracked interaction) is a 503 too. A queue at its maximum
depth whose task refuses overflow (QueueFull, see
celeste/background/backpressure.py) is answered the same way, with its own Retry-After:
the caller's transaction rolled back, so nothing of the request was stored. This module is
part of the base package: no domain imports.
"""

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

from .errors import Unavailable

logger = logging.getLogger(__name__)

DETAIL = "The service is temporarily unavailable; retry shortly."


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, (OperationalError, InterfaceError, Unavailable))


def log_unavailable(request, exc: BaseException) -> None:
    event = exc.log_event if isinstance(exc, Unavailable) else "web.database_unavailable"
    logger.warning(event, extra={"method": request.method, "path": request.path, "error": repr(exc)})


def unavailable_detail(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, Unavailable) else DETAIL


def retry_after_headers(exc: BaseException | None = None) -> dict[str, str]:
    name = exc.retry_after_setting if isinstance(exc, Unavailable) else "SERVICE_UNAVAILABLE_RETRY_AFTER_SECONDS"
    return {"Retry-After": str(getattr(settings, name))}


class DatabaseUnavailableMiddleware:
    """Turns a database-unavailable error raised by a view into a JSON 503. DRF views
    answer the same through ``celeste.api.exceptions.exception_handler``; this covers the
    others (the admin, plain Django views)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not is_unavailable(exception):
            return None
        log_unavailable(request, exception)
        return JsonResponse(
            {"detail": unavailable_detail(exception)}, status=503, headers=retry_after_headers(exception)
        )
