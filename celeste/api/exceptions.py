from django.db.models import ProtectedError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import Conflict
from .unavailable import DETAIL, is_database_unavailable, log_database_unavailable, retry_after_headers


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
    if is_database_unavailable(exc):
        log_database_unavailable(context["request"], exc)
        return Response({"detail": DETAIL}, status=status.HTTP_503_SERVICE_UNAVAILABLE, headers=retry_after_headers())
    return drf_exception_handler(exc, context)
