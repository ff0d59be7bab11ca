from django.db.models import ProtectedError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import Conflict
from .unavailable import is_unavailable, log_unavailable, retry_after_headers, unavailable_detail


def exception_handler(exc, context):
    """DRF's handler, plus domain conflicts as 409 with a readable message, and an
    unreachable database as 503 with Retry-After (see celeste/api/unavailable.py)."""
    if isinstance(exc, Conflict):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, ProtectedError):
        return Response(
            {"detail": "This object is still referenced (e.g. by orders) and cannot be deleted."},
            status=status.HTTP_409_CONFLICT,
        )
    if is_unavailable(exc):
        log_unavailable(context["request"], exc)
        return Response(
            {"detail": unavailable_detail(exc)},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers=retry_after_headers(exc),
        )
    return drf_exception_handler(exc, context)
